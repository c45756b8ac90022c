/* goodfellaz17 ops console: live refresh of server-rendered partials.
 *
 * Every element with data-refresh="<url>" is re-fetched every data-every ms
 * (default 3000) and its content replaced by the server's HTML, only when it
 * changed, never while the pointer is pressed (a click is not lost to a
 * refresh) and not while the tab is hidden. A 401 means the session ended:
 * reloading lands on the login page. No inline script, no framework.
 */
(function () {
  "use strict";

  var pressed = false;
  document.addEventListener("pointerdown", function () { pressed = true; }, true);
  document.addEventListener("pointerup", function () {
    window.setTimeout(function () { pressed = false; }, 250);
  }, true);

  function refresh(el) {
    if (document.hidden || pressed || el.dataset.loading === "1") {
      return;
    }
    el.dataset.loading = "1";
    window.fetch(el.dataset.refresh, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Accept": "text/html" }
    }).then(function (response) {
      if (response.status === 401) {
        window.location.reload();
        return null;
      }
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response.text();
    }).then(function (html) {
      if (html === null) {
        return;
      }
      if (html !== el.gfLastHtml && !pressed) {
        el.innerHTML = html;
        el.gfLastHtml = html;
      }
      el.classList.remove("stale");
      el.dataset.refreshedAt = String(Date.now());
    }).catch(function () {
      el.classList.add("stale");  /* shown dimmed until the next success */
    }).then(function () {
      el.dataset.loading = "0";
    });
  }

  function start() {
    var elements = document.querySelectorAll("[data-refresh]");
    Array.prototype.forEach.call(elements, function (el) {
      var every = parseInt(el.dataset.every || "3000", 10);
      window.setInterval(function () { refresh(el); }, Math.max(every, 1000));
    });
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) {
        Array.prototype.forEach.call(elements, refresh);
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
