"""The contract's section-6 SQL, verbatim; `{orderId}` is substituted."""

FORCE_RETRY = """UPDATE order_tasks SET retry_after = NOW()
WHERE order_id = '{orderId}' AND status = 'FAILED_RETRYING';"""

DRAIN_DEAD_LETTERS = """UPDATE order_tasks SET status = 'FAILED_RETRYING', attempts = 0, retry_after = NOW()
WHERE status = 'FAILED_PERMANENT' AND order_id = '{orderId}';"""

FORCE_COMPLETE = """UPDATE orders SET status = 'COMPLETED',
  delivered = (SELECT COALESCE(SUM(quantity), 0) FROM order_tasks
               WHERE order_id = orders.id AND status = 'COMPLETED'),
  failed_permanent_plays = (SELECT COALESCE(SUM(quantity), 0) FROM order_tasks
               WHERE order_id = orders.id AND status = 'FAILED_PERMANENT')
WHERE id = '{orderId}';"""

STUCK_ORDERS = """SELECT id, status, quantity, delivered, created_at, NOW() - created_at as age
FROM orders WHERE status = 'PROCESSING' AND created_at < NOW() - INTERVAL '2 hours';"""

TASK_DISTRIBUTION = """SELECT o.id as order_id, o.quantity as order_qty,
  COUNT(*) FILTER (WHERE t.status = 'PENDING') as pending,
  COUNT(*) FILTER (WHERE t.status = 'EXECUTING') as executing,
  COUNT(*) FILTER (WHERE t.status = 'COMPLETED') as completed,
  COUNT(*) FILTER (WHERE t.status = 'FAILED_RETRYING') as retrying,
  COUNT(*) FILTER (WHERE t.status = 'FAILED_PERMANENT') as dead_letter
FROM orders o JOIN order_tasks t ON t.order_id = o.id
WHERE o.status IN ('PROCESSING', 'PENDING') GROUP BY o.id, o.quantity;"""

RECENT_FAILURES = """SELECT t.id, t.order_id, t.quantity, t.last_error, t.attempts, t.executed_at
FROM order_tasks t WHERE t.status = 'FAILED_PERMANENT'
ORDER BY t.executed_at DESC LIMIT 20;"""

INVARIANT_HEALTH = "SELECT * FROM v_invariant_health;"

INVARIANT_LOG = """SELECT * FROM invariant_check_log WHERE order_id = '{orderId}' ORDER BY check_timestamp DESC;"""

ALL = {
    "force_retry": FORCE_RETRY,
    "drain_dead_letters": DRAIN_DEAD_LETTERS,
    "force_complete": FORCE_COMPLETE,
    "stuck_orders": STUCK_ORDERS,
    "task_distribution": TASK_DISTRIBUTION,
    "recent_failures": RECENT_FAILURES,
    "invariant_health": INVARIANT_HEALTH,
    "invariant_log": INVARIANT_LOG,
}


def render(statement: str, order_id: object) -> str:
    return statement.replace("{orderId}", str(order_id))
