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

/* Dashboard page: BokehJS reconnects with the same token, which expires after
   FLEET_SESSION_TOKEN_EXPIRATION seconds.  When the connection drops after that, reload
   the page so Flask mints a fresh session (the dashboard state lives in Redis, so
   nothing is lost). */
function fleetReloadOnExpiredReconnect(lifetimeSeconds) {
  var minted = Date.now();
  function expired() { return Date.now() - minted > (lifetimeSeconds - 5) * 1000; }
  var hooked = false;
  var poll = setInterval(function () {
    var docs = (window.Bokeh && window.Bokeh.documents) || [];
    if (!docs.length || hooked) { return; }
    hooked = true;
    clearInterval(poll);
    docs[0].on_event('connection_lost', function () { if (expired()) { location.reload(); } });
  }, 250);
}
