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

/* Dashboard pages need nothing here: the status mark and the re-authentication
   (reload with jitter once the site answers) come with the Bokeh document itself,
   see app/instance/static/status.js, so embedded dashboards get them too. */
