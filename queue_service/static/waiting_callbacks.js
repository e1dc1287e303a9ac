// Call-backs: leave the line and be told when the turn is near (a wave that offers them has the
// #callback box, rendered by the server; its form also works without this script).
var CB = INFO && INFO.callbacks, cbBox = $('callback');
cbKind = cbBox ? (load(KEY + 'callback') || cbBox.getAttribute('data-kind') || '') : '';
function pushOK() {
  return !!(CB && CB.vapid_public_key && CB.channels.indexOf('webpush') >= 0 &&
    'serviceWorker' in navigator && 'PushManager' in window);
}
function renderCallback() {
  if (!cbBox) return;
  cbBox.hidden = !CB || !LIVE.test(view.state) || !ticket;
  if (cbBox.hidden) return;
  $('cb-intro').textContent = fill(t('cb_intro'), { lead: eta(CB.lead_s) });
  $('cb-intro').hidden = !!cbKind;
  if ($('cb-form')) $('cb-form').hidden = !!cbKind;
  $('cb-push').hidden = !!cbKind || !pushOK();
  $('cb-done').hidden = !cbKind;
  if (cbKind) $('cb-done').textContent = fill(t('cb_done'), { kind: t('cb_kind_' + cbKind), w: eta(CB.return_window_s) });
}
function optIn(contact) {
  $('cb-error').textContent = '';
  request('POST', '/notify', { contact: contact, language: lang }).then(function (r) {
    if ((r.res.status === 200 || r.res.status === 201) && r.data && r.data.callback) {
      cbKind = r.data.callback.kind; save(KEY + 'callback', cbKind); render();
      return;
    }
    var why = (r.data && r.data.error && r.data.error.message) || 'HTTP ' + r.res.status;
    $('cb-error').textContent = fill(t('cb_failed'), { e: why });
  }, function () { $('cb-error').textContent = t('n_offline'); });
}
function serverKey(b64) {
  var raw = atob(b64.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((b64.length + 3) % 4));
  return Uint8Array.from(raw, function (c) { return c.charCodeAt(0); });
}
if (cbBox) {
  if ($('cb-form')) $('cb-form').addEventListener('submit', function (e) {
    e.preventDefault();
    var chosen = document.querySelector('#cb-form input[name=kind]:checked');
    optIn({ kind: chosen ? chosen.value : 'sms', address: $('cb-address').value });
  });
  $('cb-push').addEventListener('click', function () {
    navigator.serviceWorker.register('/push-sw.js').then(function (reg) {
      return reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: serverKey(CB.vapid_public_key) });
    }).then(function (sub) { optIn({ kind: 'webpush', address: sub.toJSON() }); },
      function () { $('cb-error').textContent = fill(t('cb_failed'), { e: t('cb_check') }); });
  });
}

