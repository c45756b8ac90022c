"""The OrderDeliveryWorker and the process that runs it alone."""
