/* Small page helpers; no framework. */

/* Admin page: swap the panel every few seconds; go to the login page when the
   session has ended (the panel request is then redirected). */
function fleetRefreshPanel(el) {
  var every = 1000 * (parseFloat(el.dataset.refresh) || 3);
  function tick() {
    fetch(el.dataset.src, {credentials: 'same-origin', cache: 'no-store'}).then(function (r) {
      if (r.redirected || r.status === 401 || r.status === 403) { location.reload(); return; }
      if (!r.ok) { throw new Error(r.status); }
      return r.text().then(function (html) {
        el.innerHTML = html;
        var stamp = document.getElementById('refreshed');
        if (stamp) { stamp.textContent = 'updated ' + new Date().toLocaleTimeString(); }
      });
    }).catch(function (e) {
      var stamp = document.getElementById('refreshed');
      if (stamp) { stamp.textContent = 'refresh failed (' + e + '), retrying'; }
    }).finally(function () { setTimeout(tick, every); });
  }
  setTimeout(tick, every);
}

/* The admin page's panel (no inline script: the pages' CSP allows none). */
(function () {
  var panel = document.getElementById('panel');
  if (panel && panel.dataset.src) { fleetRefreshPanel(panel); }
})();

/* Dashboard pages: the status mark and the re-authentication (reload with jitter
   once the site answers) are in status.js, which /embed/<name>.js appends too. */
