// The link page: one device's WhatsApp login through a link token, by QR code or by pairing
// code, followed live over Server-Sent Events. Same-origin relative URLs only (the page's CSP
// allows nothing else); no inline script or style, so visibility is the `hidden` attribute.
'use strict';

(function () {
  // The page is served at <prefix>/link/<token>; every call goes below that path.
  const path = location.pathname.match(/^(.*\/link\/)([^/]+)\/?$/);
  const $ = (id) => document.getElementById(id);

  const view = {
    state: $('state'),
    error: $('error'),
    qrView: $('qr-view'),
    qr: $('qr'),
    qrWaiting: $('qr-waiting'),
    countdownLine: $('countdown-line'),
    countdown: $('countdown'),
    phoneView: $('phone-view'),
    phoneForm: $('phone-form'),
    phone: $('phone'),
    phoneSubmit: $('phone-submit'),
    codeView: $('code-view'),
    pairCode: $('pair-code'),
    useQr: $('use-qr'),
    failed: $('failed'),
    failedReason: $('failed-reason'),
    retry: $('retry'),
    success: $('success'),
    linkedLine: $('linked-line'),
    linkedNumber: $('linked-number'),
  };

  const STATES = {
    disconnected: 'Not connected to WhatsApp',
    connecting: 'Connecting to WhatsApp…',
    connected: 'Waiting for you to link your phone',
    passkey_required: 'WhatsApp asks for your passkey on your phone',
    logged_in: 'Linked',
  };

  const FAILURES = {
    qr_exhausted: 'No code was scanned in time, so WhatsApp stopped showing new ones.',
    pair_code_rejected: 'WhatsApp refused the code: it was wrong or had run out.',
    timeout: 'WhatsApp did not answer in time.',
    client_outdated:
      'WhatsApp no longer accepts this service\'s version. Tell whoever sent you this link.',
    pairing_signature_mismatch:
      'This account (a hosted WhatsApp Business account) cannot be linked here yet.',
    interrupted: 'The service restarted while you were linking.',
    rate_limited: 'WhatsApp paused new links after too many attempts. Wait a while first.',
    passkey_failed: 'The passkey step did not work.',
  };

  let events = null;
  let countdownTimer = null;
  let expiresAt = 0;
  let finished = false;

  if (!path) {
    showError('This page address is not a link. Open the link exactly as you received it.');
    return;
  }
  const base = path[1] + path[2];

  // One call to the token's JSON API; resolves to `results`, or throws an Error whose message
  // is the gateway's, with `status` set.
  async function call(method, suffix) {
    let response;
    try {
      response = await fetch(base + suffix, {
        method,
        headers: { Accept: 'application/json' },
        cache: 'no-store',
        credentials: 'same-origin',
      });
    } catch (_) {
      throw Object.assign(new Error('The service cannot be reached. Check your connection.'), {
        status: 0,
      });
    }
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message =
        (body && body.message) || 'The service answered ' + response.status + '.';
      throw Object.assign(new Error(message), { status: response.status });
    }
    return (body && body.results) || {};
  }

  function showError(message) {
    view.error.textContent = message;
    view.error.hidden = !message;
  }

  function setState(state) {
    view.state.textContent = STATES[state] || state;
  }

  // Handles a failed call: a token that is gone or unknown ends the page; anything else is
  // shown and the user may try again.
  function callFailed(error) {
    if (finished) {
      return;
    }
    if (error.status === 404 || error.status === 410) {
      finish();
      view.qrView.hidden = true;
      view.phoneView.hidden = true;
      view.failed.hidden = true;
      showError(error.message + ' Ask whoever sent you this link for a new one.');
      return;
    }
    showError(error.message);
  }

  // The QR code and its countdown.

  function sameOrigin(link) {
    // The gateway that serves this page serves the image; its public base may name another
    // host (a proxy), which the page's CSP would refuse.
    const url = new URL(link, location.href);
    return url.origin === location.origin ? url.href : url.pathname + url.search;
  }

  function showQr(link, validMs) {
    if (finished || !link) {
      return;
    }
    view.qr.src = sameOrigin(link);
    view.qr.classList.remove('stale');
    expiresAt = Date.now() + Math.max(0, validMs);
    tick();
    if (countdownTimer === null) {
      countdownTimer = setInterval(tick, 250);
    }
  }

  function tick() {
    const left = Math.max(0, Math.ceil((expiresAt - Date.now()) / 1000));
    view.countdown.textContent = String(left);
    view.countdownLine.hidden = view.qr.hidden;
    view.qr.classList.toggle('stale', left === 0);
  }

  function stopCountdown() {
    if (countdownTimer !== null) {
      clearInterval(countdownTimer);
      countdownTimer = null;
    }
  }

  view.qr.addEventListener('load', () => {
    view.qr.hidden = false;
    view.qrWaiting.hidden = true;
    tick();
  });

  // The two ways to log in.

  async function loginWithQr() {
    showError('');
    view.failed.hidden = true;
    view.codeView.hidden = true;
    view.qrView.hidden = false;
    view.phoneView.hidden = false;
    try {
      const results = await call('GET', '/login');
      showQr(results.qr_link, (results.qr_duration || 0) * 1000);
    } catch (error) {
      callFailed(error);
    }
  }

  // `+62 (812) 345-6789` → `628123456789`, or null unless it is 7 to 15 digits starting with a
  // country code (never 0), as the gateway requires.
  function phoneDigits(typed) {
    const digits = typed.replace(/[\s().-]/g, '').replace(/^\+/, '');
    return /^[1-9][0-9]{6,14}$/.test(digits) ? digits : null;
  }

  function showPairCode(code) {
    if (finished || !code) {
      return;
    }
    view.pairCode.textContent = code;
    view.qrView.hidden = true;
    view.failed.hidden = true;
    view.codeView.hidden = false;
    view.pairCode.setAttribute('tabindex', '-1');
    view.pairCode.focus();
  }

  view.phoneForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const digits = phoneDigits(view.phone.value);
    if (!digits) {
      view.phone.setAttribute('aria-invalid', 'true');
      showError(
        'Enter your number starting with its country code, 7 to 15 digits in all, ' +
          'e.g. +62 812 3456 789.',
      );
      view.phone.focus();
      return;
    }
    view.phone.removeAttribute('aria-invalid');
    showError('');
    view.phoneSubmit.disabled = true;
    view.phoneSubmit.textContent = 'Getting a code…';
    try {
      const results = await call('POST', '/login/code?phone=' + encodeURIComponent(digits));
      showPairCode(results.pair_code);
    } catch (error) {
      callFailed(error);
    } finally {
      view.phoneSubmit.disabled = false;
      view.phoneSubmit.textContent = 'Get a code';
    }
  });

  view.useQr.addEventListener('click', loginWithQr);
  view.retry.addEventListener('click', loginWithQr);

  // The outcome.

  // `628123456789:3@s.whatsapp.net` → `+628123456789`.
  function numberOf(jid) {
    const user = String(jid || '').split(/[:@]/)[0];
    return /^[0-9]+$/.test(user) ? '+' + user : '';
  }

  function finish() {
    finished = true;
    stopCountdown();
    if (events) {
      events.close();
      events = null;
    }
  }

  function succeeded(jid) {
    if (finished) {
      return;
    }
    finish();
    setState('logged_in');
    showError('');
    const number = numberOf(jid);
    view.linkedNumber.textContent = number;
    view.linkedLine.hidden = !number;
    view.qrView.hidden = true;
    view.phoneView.hidden = true;
    view.failed.hidden = true;
    view.success.hidden = false;
    view.success.setAttribute('tabindex', '-1');
    view.success.focus();
  }

  function failed(reason) {
    if (finished) {
      return;
    }
    view.failedReason.textContent = FAILURES[reason] || 'The login failed (' + reason + ').';
    view.qrView.hidden = true;
    view.codeView.hidden = true;
    view.failed.hidden = false;
  }

  // The live events: `state` first, then each recorded event with its envelope.

  function data(message) {
    try {
      return JSON.parse(message.data);
    } catch (_) {
      return null;
    }
  }

  function listen() {
    events = new EventSource(base + '/events');
    events.addEventListener('state', (message) => {
      const state = data(message);
      if (!state) {
        return;
      }
      setState(state.state);
      if (state.state === 'logged_in') {
        succeeded(null);
      }
    });
    events.addEventListener('state_changed', (message) => {
      const envelope = data(message);
      if (envelope) {
        setState(envelope.data.to);
      }
    });
    events.addEventListener('qr_refreshed', (message) => {
      const envelope = data(message);
      if (envelope) {
        // How long the code lives, measured on the gateway's clock, counted on ours.
        const validMs = Date.parse(envelope.data.expires_at) - Date.parse(envelope.occurred_at);
        showQr(envelope.data.qr_link, validMs);
      }
    });
    events.addEventListener('pair_code_issued', (message) => {
      const envelope = data(message);
      if (envelope && !view.codeView.hidden) {
        showPairCode(envelope.data.pair_code);
      }
    });
    events.addEventListener('logged_in', (message) => {
      const envelope = data(message);
      succeeded(envelope ? envelope.data.jid : null);
    });
    events.addEventListener('login_failed', (message) => {
      const envelope = data(message);
      failed(envelope ? envelope.data.reason : 'unknown');
    });
    events.addEventListener('logged_out', () => setState('disconnected'));
    // `behind` ends the stream; EventSource reconnects with Last-Event-ID and misses nothing.
    events.addEventListener('error', () => {
      if (events && events.readyState === EventSource.CLOSED && !finished) {
        showError('Live updates stopped. Reload the page to see where the link stands.');
      }
    });
  }

  listen();
  loginWithQr();
})();
