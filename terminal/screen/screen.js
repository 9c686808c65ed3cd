// The attendant screen of `dt-pos serve`: plain JavaScript over the ECR API (same origin).
// The token comes from the URL fragment (#token=..., never sent to a server) or the login form,
// and is kept in sessionStorage for this tab only. Events arrive as server-sent events read
// with fetch (EventSource cannot send the Authorization header).
'use strict';

const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem('dt-pos-token') || '';
let digits = '';
let current = null; // reference of the payment this screen started and follows
const payments = new Map();

function tenge(tiyn) {
  const t = Math.trunc(tiyn);
  return `${Math.floor(t / 100)}.${String(t % 100).padStart(2, '0')}`;
}

function api(method, path, body) {
  const headers = { authorization: `Bearer ${token}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  return fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) }).then(async (r) => {
    const data = await r.json().catch(() => ({}));
    if (r.status === 401) showLogin('The token was refused.');
    return { status: r.status, data };
  });
}

function showLogin(message) {
  $('app').hidden = true;
  $('login').hidden = false;
  if (message) $('phase').textContent = message;
  $('token').focus();
}

// ------------------------------------------------------------------ amount keypad
function renderAmount() {
  $('amount').textContent = tenge(Number(digits || '0'));
}
function key(k) {
  if (current && payments.get(current)?.state === 'started') return;
  if (k === 'back') digits = digits.slice(0, -1);
  else if (/^[0-9]+$/.test(k) && (digits + k).replace(/^0+/, '').length <= 11) digits = (digits + k).replace(/^0+/, '');
  renderAmount();
}
$('keypad').addEventListener('click', (e) => {
  const b = e.target.closest('button[data-key]');
  if (b) key(b.dataset.key);
});
document.addEventListener('keydown', (e) => {
  if (e.target instanceof HTMLInputElement) return;
  if (/^[0-9]$/.test(e.key)) key(e.key);
  else if (e.key === 'Backspace') key('back');
  else if (e.key === 'Escape') $('clear').click();
  else return;
  e.preventDefault();
});
$('clear').addEventListener('click', () => {
  digits = '';
  renderAmount();
});

// ------------------------------------------------------------------ payment
$('sale').addEventListener('submit', async (e) => {
  e.preventDefault();
  const amount = Number(digits || '0');
  if (amount <= 0) {
    $('phase').textContent = 'Enter an amount first.';
    return;
  }
  const reference = `screen-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
  current = reference;
  showOutcome(null);
  $('receipt').hidden = true;
  const r = await api('POST', '/v1/payments', { amount, reference });
  if (r.status >= 400) {
    current = null;
    $('phase').textContent = `Not started: ${r.data.message || r.data.error}`;
    return;
  }
  update(r.data);
});
$('cancel').addEventListener('click', async () => {
  if (!current) return;
  const r = await api('POST', `/v1/payments/${encodeURIComponent(current)}/cancel`);
  if (r.status >= 400) $('phase').textContent = r.data.message || r.data.error;
  else update(r.data);
});
$('pin-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const pin = $('pin').value;
  $('pin').value = '';
  if (!current) return;
  const r = await api('POST', `/v1/payments/${encodeURIComponent(current)}/pin`, { pin });
  if (r.status >= 400) $('phase').textContent = r.data.message || r.data.error;
  else $('pin-form').hidden = true;
});
$('pin-cancel').addEventListener('click', async () => {
  $('pin').value = '';
  if (current) await api('POST', `/v1/payments/${encodeURIComponent(current)}/pin`, { pin: null });
  $('pin-form').hidden = true;
});

const PHASE_TEXT = {
  present_card: 'Present card',
  card: 'Reading card…',
  pin: 'Cardholder: enter your PIN',
  processing: 'Processing — do not remove the card',
};

function showPhase(phase, triesLeft) {
  $('phase').textContent = phase ? PHASE_TEXT[phase] + (triesLeft !== undefined ? ` (wrong PIN, ${triesLeft} tries left)` : '') : '';
  const pin = phase === 'pin';
  $('pin-form').hidden = !pin;
  $('pin-tries').textContent = triesLeft !== undefined ? ` — ${triesLeft} tries left` : '';
  if (pin) $('pin').focus();
}

const OUTCOME_TEXT = {
  approved: 'APPROVED',
  declined: 'DECLINED',
  online_required: 'ONLINE REQUIRED',
  ended: 'NOT COMPLETED',
  cancelled: 'CANCELLED',
  interrupted: 'INTERRUPTED',
};

function showOutcome(p) {
  const box = $('outcome');
  box.className = 'outcome';
  if (!p) {
    $('outcome-text').textContent = '';
    $('outcome-reason').textContent = '';
    return;
  }
  box.classList.add(p.state === 'approved' ? 'approved' : p.state === 'declined' ? 'declined' : 'other');
  $('outcome-text').textContent = OUTCOME_TEXT[p.state] || p.state;
  $('outcome-reason').textContent =
    p.state === 'approved'
      ? `${p.amountText} — receipt #${p.payment.receipt}`
      : `${p.amountText}${p.reason ? ` — ${p.reason.replace(/_/g, ' ')}` : ''}${p.detail ? ` (${p.detail})` : ''}`;
}

function receipt(p) {
  const m = window.dtMerchant || {};
  return [
    `${m.name || ''} (${m.id || ''}, MCC ${m.mcc ?? ''})`,
    `Receipt #${p.payment.receipt}   ref ${p.reference}`,
    `Amount     ${p.amountText}`,
    `Time       ${new Date(p.payment.time * 1000).toISOString().replace('.000Z', 'Z')}`,
    `Card       ${p.payment.card.slice(0, 8)}…  counter ${p.payment.counter}`,
    `Verified   ${p.payment.cvm}`,
    `Transfer   ${p.payment.transfer.slice(0, 16)}…`,
    `State      ${p.settlement}`,
  ].join('\n');
}

function update(p) {
  payments.set(p.reference, p);
  renderList();
  if (p.reference !== current) return;
  const running = p.state === 'started';
  $('charge').disabled = running;
  $('cancel').disabled = !running;
  if (running) {
    showPhase(p.phase);
    showOutcome(null);
  } else {
    showPhase(null);
    showOutcome(p);
    if (p.state === 'approved' && p.payment) {
      $('receipt-text').textContent = receipt(p);
      $('receipt').hidden = false;
      digits = '';
      renderAmount();
    }
  }
}

function renderList() {
  const rows = [...payments.values()].sort((a, b) => b.created - a.created || (a.reference < b.reference ? 1 : -1)).slice(0, 100);
  const tbody = $('payments');
  tbody.replaceChildren(
    ...rows.map((p) => {
      const tr = document.createElement('tr');
      tr.dataset.reference = p.reference;
      tr.dataset.state = p.state;
      const cells = [
        p.reference,
        p.amountText,
        (OUTCOME_TEXT[p.state] || p.state) + (p.reason && p.state !== 'approved' ? ` (${p.reason})` : ''),
        p.settlement || (p.state === 'started' ? PHASE_TEXT[p.phase] || 'in progress' : '—'),
        p.payment ? `#${p.payment.receipt}` : '—',
      ];
      cells.forEach((text, i) => {
        const td = document.createElement('td');
        td.textContent = text;
        if (i === 1) td.className = 'num';
        tr.appendChild(td);
      });
      const actions = document.createElement('td');
      const pay = p.payment;
      if (pay && !pay.voided && (pay.state === 'pending' || pay.state === 'submitted')) {
        actions.appendChild(actionButton('Void', 'void', p.reference, `Void payment ${p.reference}`));
      }
      if (pay && pay.refundable > 0) {
        actions.appendChild(actionButton('Refund', 'refund', p.reference, `Refund payment ${p.reference}`));
      }
      tr.appendChild(actions);
      return tr;
    }),
  );
}

// ------------------------------------------------------------------ void, refund
function actionButton(text, action, reference, label) {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = text;
  b.dataset.action = action;
  b.dataset.reference = reference;
  b.setAttribute('aria-label', label);
  return b;
}
let refunding = null; // { reference, refundReference } of the open refund form
$('payments').addEventListener('click', async (e) => {
  const b = e.target.closest('button[data-action]');
  if (!b) return;
  const p = payments.get(b.dataset.reference);
  if (!p || !p.payment) return;
  if (b.dataset.action === 'void') {
    b.disabled = true;
    const r = await api('POST', `/v1/payments/${encodeURIComponent(p.reference)}/void`);
    if (r.status >= 400) $('adjust-result').textContent = `Not voided: ${r.data.message || r.data.error}`;
    else {
      update(r.data.payment);
      $('adjust-result').textContent = `VOIDED ${p.amountText} (${p.reference}): pending ledger confirmation.`;
    }
    return;
  }
  // One refund reference per opened form: a repeated click sends the same one (the API refunds once).
  refunding = {
    reference: p.reference,
    refundReference: `screen-refund-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
  };
  $('refund-title').textContent = `Refund ${p.reference} (${tenge(p.payment.refundable)} KZT refundable)`;
  $('refund-amount').value = tenge(p.payment.refundable);
  $('refund-form').hidden = false;
  $('refund-amount').focus();
});
$('refund-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!refunding) return;
  const m = /^([0-9]{1,11})(?:[.]([0-9]{1,2}))?$/.exec($('refund-amount').value.trim());
  if (!m) {
    $('adjust-result').textContent = 'Enter the amount in tenge, e.g. 50.25.';
    return;
  }
  const amount = Number(m[1]) * 100 + Number((m[2] || '').padEnd(2, '0'));
  const r = await api('POST', `/v1/payments/${encodeURIComponent(refunding.reference)}/refunds`, {
    refundReference: refunding.refundReference,
    amount,
  });
  if (r.status >= 400) {
    $('adjust-result').textContent = `Not refunded: ${r.data.message || r.data.error}`;
    return;
  }
  update(r.data.payment);
  $('adjust-result').textContent = `REFUNDED ${tenge(amount)} KZT (${refunding.reference}): credited to the card at its next sync.`;
  refunding = null;
  $('refund-form').hidden = true;
});
$('refund-cancel').addEventListener('click', () => {
  refunding = null;
  $('refund-form').hidden = true;
});

// ------------------------------------------------------------------ status, report
function age(seconds) {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min`;
  return `${Math.floor(seconds / 3600)} h`;
}
function renderStatus(s) {
  window.dtMerchant = s.merchant;
  $('merchant').textContent = `DT POS — ${s.merchant.name}`;
  const r = s.reader;
  $('reader-state').textContent =
    { ready: 'ready', card: 'card on reader', absent: 'no reader', down: 'PC/SC down' }[r.state] + (r.name ? ` (${r.name})` : '');
  renderSync(s.sync);
  $('crl-age').textContent = s.crl
    ? `v${s.crl.version}, ${age(s.crl.ageSeconds)} old (${s.offlineAcceptance})`
    : `none (${s.offlineAcceptance})`;
  $('pending').textContent = `${tenge(s.pending.amount)} KZT in ${s.pending.count}`;
}
function renderSync(sync) {
  const last = sync.lastOk ? `, last ok ${new Date(sync.lastOk * 1000).toLocaleTimeString()}` : '';
  $('sync-state').textContent = `${sync.state}${last}${sync.lastProblem ? ` (${sync.lastProblem})` : ''}`;
}
async function refreshStatus() {
  const r = await api('GET', '/v1/status');
  if (r.status === 200) renderStatus(r.data);
}
async function refreshReport() {
  const r = await api('GET', '/v1/report');
  if (r.status !== 200) return;
  const rep = r.data;
  const rows = Object.entries(rep.byState)
    .map(
      ([s, v]) =>
        `<tr><th scope="row">${s.replace(/_/g, ' ')}</th><td class="num">${v.count}</td><td class="num">${tenge(v.amount)} KZT</td></tr>`,
    )
    .join('');
  const days = rep.byDay
    .map(
      (d) =>
        `<tr><td>${d.day}</td><td>${d.state.replace(/_/g, ' ')}</td><td class="num">${d.count}</td><td class="num">${tenge(d.amount)} KZT</td></tr>`,
    )
    .join('');
  const open = Object.values(rep.openBatch.byState).reduce((a, v) => ({ count: a.count + v.count, amount: a.amount + v.amount }), {
    count: 0,
    amount: 0,
  });
  $('report').innerHTML =
    `<table><caption>Totals by state</caption><thead><tr><th scope="col">State</th><th scope="col">Count</th><th scope="col">Amount</th></tr></thead><tbody>${rows}</tbody></table>` +
    `<p>Double spends covered: ${tenge(rep.doubleSpent.covered.amount)} KZT (${rep.doubleSpent.covered.count}); not covered: ${tenge(rep.doubleSpent.uncovered.amount)} KZT (${rep.doubleSpent.uncovered.count})</p>` +
    `<table><caption>By day (UTC)</caption><thead><tr><th scope="col">Day</th><th scope="col">State</th><th scope="col">Count</th><th scope="col">Amount</th></tr></thead><tbody>${days}</tbody></table>` +
    `<p id="open-batch">Open batch since the last close: ${open.count} payment(s), ${tenge(open.amount)} KZT</p>` +
    (rep.adjustments
      ? `<p id="adjustments">${adjustmentLine('Voids', rep.adjustments.void)}; ${adjustmentLine('refunds', rep.adjustments.refund)}</p>`
      : '');
}
function adjustmentLine(name, byState) {
  const a = byState.accepted;
  const open = { count: byState.pending.count + byState.submitted.count, amount: byState.pending.amount + byState.submitted.amount };
  return `${name}: confirmed ${tenge(a.amount)} KZT (${a.count}), pending ${tenge(open.amount)} KZT (${open.count}), refused ${byState.refused.count}`;
}
$('close-batch').addEventListener('click', async () => {
  const r = await api('POST', '/v1/batch/close');
  if (r.status === 200) {
    $('close-result').textContent = `Batch closed: ${r.data.close.count} payment(s), ${tenge(r.data.close.amount)} KZT.`;
    refreshReport();
  } else $('close-result').textContent = r.data.message || r.data.error;
});

// ------------------------------------------------------------------ events
async function events() {
  for (;;) {
    try {
      const r = await fetch('/v1/events', { headers: { authorization: `Bearer ${token}` } });
      if (r.status === 401) return showLogin('The token was refused.');
      if (!r.ok || !r.body) throw new Error(`events: ${r.status}`);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let at;
        while ((at = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, at);
          buf = buf.slice(at + 2);
          let type = 'message';
          let data = '';
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) type = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
          }
          if (data) onEvent(type, JSON.parse(data));
        }
      }
    } catch {
      // the service restarts or the network blips: reconnect below
    }
    await new Promise((r) => setTimeout(r, 1000));
    refreshAll();
  }
}
function onEvent(type, e) {
  if (type === 'status') renderStatus(e);
  else if (type === 'payment') {
    update(e.payment);
    if (e.payment.state !== 'started') {
      refreshReport();
      refreshStatus();
    }
  } else if (type === 'adjustment') refreshReport();
  else if (type === 'phase' && e.reference === current) showPhase(e.phase, e.triesLeft);
  else if (type === 'present_card_again' && e.reference === current) $('phase').textContent = 'PRESENT CARD AGAIN';
  else if (type === 'sync') {
    renderSync(e.sync);
    if (e.sync.state !== 'running') refreshStatus();
  } else if (type === 'reader') refreshStatus();
}

async function refreshAll() {
  const r = await api('GET', '/v1/payments?limit=100');
  if (r.status !== 200) return;
  for (const p of r.data.payments) payments.set(p.reference, p);
  renderList();
  await Promise.all([refreshStatus(), refreshReport()]);
}

async function startApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  renderAmount();
  await refreshAll();
  document.body.dataset.ready = 'true';
  events();
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem('dt-pos-token', token);
  startApp();
});

const fromHash = /(?:^#|&)token=([^&]+)/.exec(location.hash);
if (fromHash) {
  token = decodeURIComponent(fromHash[1]);
  sessionStorage.setItem('dt-pos-token', token);
  history.replaceState(null, '', location.pathname);
}
if (token) startApp();
else showLogin();
