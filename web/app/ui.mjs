// Rendering: turns the app's rooms into DOM. Text only ever goes in through textContent or
// text nodes, never as HTML; no inline styles (the server's CSP forbids them).
import { linkParts, withDays, safetyNumber } from './text.mjs';
import { clock } from './clock.mjs';
import { encodeQr } from './qr.mjs';
import { INLINE_TYPES } from './files.mjs';
import { base64ToBytes } from '../themis/index.mjs';

export const $ = (id) => document.getElementById(id);

/** A small element builder: h('li', {class: 'x', dataset: {k: 'v'}}, child, 'text'). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'dataset') Object.assign(el.dataset, value);
    else if (name === 'class') el.className = value;
    else if (name === 'onclick') el.addEventListener('click', value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) if (child !== null && child !== undefined && child !== false) el.append(child);
  return el;
}

export const shortFp = (fp) => (fp ? fp.split(' ').slice(0, 2).join(' ') : 'unknown key');
const ROLE = { you: 'You', owner: 'Owner', member: 'Member' };

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
function time(ms, withDate = false) {
  const d = new Date(ms);
  return h('time', { datetime: d.toISOString(), title: dateFormat.format(d) }, (withDate ? dateFormat : timeFormat).format(d));
}

const CONN_TEXT = {
  online: 'connected', connecting: 'connecting…', offline: 'offline', removed: 'removed', deleted: 'deleted',
  revoked: 'invite revoked', failed: 'failed', locked: 'locked', none: 'no rooms yet', inactive: 'no active rooms',
};

export function renderConnection(state, detail) {
  const el = $('connection-state');
  el.dataset.state = state;
  el.textContent = CONN_TEXT[state] ?? state;
  el.title = detail || '';
  if (detail && state === 'offline') el.textContent = `offline — ${detail}`;
}

/** Puts `nodes` into `parent` in order, moving only what is out of place (focus stays where it is). */
function placeChildren(parent, nodes) {
  let cursor = parent.firstChild;
  for (const node of nodes) {
    if (node === cursor) cursor = cursor.nextSibling;
    else parent.insertBefore(node, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}

const roomItems = new Map(); // room id → {node, version}

export function renderRoomList(rooms, currentId, onOpen) {
  const nodes = rooms.map((room) => {
    const unread = room.unread();
    const status = room.record.phase === 'joining' ? 'waiting for the owner' : room.record.status !== 'active' ? room.record.status : '';
    const version = JSON.stringify([room.record.name, unread, status, room.id === currentId]);
    const known = roomItems.get(room.id);
    const button = known?.node.firstChild ?? h('button', {
      type: 'button', class: 'room-item', dataset: { testid: 'room-item', room: room.id }, onclick: () => onOpen(room.id),
    });
    if (known?.version !== version) { // the same button, so that a focused room keeps the focus
      button.classList.toggle('current', room.id === currentId);
      if (room.id === currentId) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
      button.setAttribute('aria-label', `${room.record.name}${unread ? `, ${unread} unread` : ''}`);
      button.replaceChildren(...[
        h('span', { class: 'room-item-name' }, room.record.name),
        status && h('span', { class: 'room-item-status' }, status),
        unread && h('span', { class: 'badge', dataset: { testid: 'unread' } }, String(unread))].filter(Boolean));
    }
    const entry = { node: known?.node ?? h('li', {}, button), version };
    roomItems.set(room.id, entry);
    return entry.node;
  });
  for (const id of roomItems.keys()) if (!rooms.some((room) => room.id === id)) roomItems.delete(id);
  placeChildren($('room-list'), nodes);
  $('no-rooms').hidden = rooms.length > 0;
}

// What an own message's line says: sent once the server committed it (its `sent` reply came).
const STATUS = {
  sent: 'sent', pending: 'sending…', uploading: 'uploading…', offline: 'not sent yet: waiting for the server',
  held: 'not sent yet: waiting for the new room key', failed: 'not sent',
};

function statusOf(item) {
  const text = item.status === 'failed' && item.reason ? `${STATUS.failed}: ${item.reason}` : STATUS[item.status];
  return h('span', { class: `status ${item.status}`, dataset: { testid: 'status' } }, text);
}

/** A message's text: text nodes, and an <a> for each http(s) link (its text is the link's text). */
function messageText(text) {
  return linkParts(text).map((part) => (part.href
    ? h('a', { href: part.href, target: '_blank', rel: 'noopener noreferrer' }, part.text)
    : document.createTextNode(part.text)));
}

/**
 * The name a key gave itself (§6.7), as text, and a mark when another key of the room holds the
 * same name. Always shown beside the fingerprint: anyone can take any name.
 */
function nameParts({ name, same }) {
  if (!name) return null;
  return [
    h('span', { class: 'name', dir: 'auto', dataset: { testid: 'sender-name' } }, name),
    same ? h('span', {
      class: 'same-name', dataset: { testid: 'same-name' },
      title: 'Another key in this room has the same name: tell them apart by the fingerprint',
    }, 'same name as another member') : null,
  ];
}

const sizeFormat = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
function fileSize(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1024 * 1024) return `${sizeFormat.format(bytes / 1024)} KiB`;
  return `${sizeFormat.format(bytes / 1024 / 1024)} MiB`;
}

// Blob URLs of what the timeline shows (previews, checked images), one per file, revoked when
// the page shows another room.
const blobUrls = new Map();
function blobUrl(key, make) {
  if (!blobUrls.has(key)) blobUrls.set(key, URL.createObjectURL(make()));
  return blobUrls.get(key);
}
function revokeBlobUrls() {
  for (const url of blobUrls.values()) URL.revokeObjectURL(url);
  blobUrls.clear();
}

/**
 * A file message's body: name and size as text; an image's preview at once and the image itself
 * once it was fetched and checked (`files.blobOf`); any other file behind a Download button.
 */
function fileBody(item, files) {
  const { file, transfer } = item;
  const inline = INLINE_TYPES.has(file.type);
  const ready = transfer?.status === 'ready' && file.id ? files.blobOf(file.id) : null;
  const parts = [];
  if (inline && ready) {
    parts.push(h('img', { class: 'file-image', alt: file.name, src: blobUrl(`f${file.id}`, () => ready), dataset: { testid: 'file-image' } }));
  } else if (inline && file.preview) {
    // The sender's preview: only ever an image, shown until the file itself is checked.
    parts.push(h('img', {
      class: 'file-preview', alt: `Preview of ${file.name}`, dataset: { testid: 'file-preview' },
      src: blobUrl(`p${file.id}`, () => new Blob([base64ToBytes(file.preview)], { type: 'image/jpeg' })),
    }));
  }
  const progress = item.progress ?? (transfer?.status === 'working' ? transfer : null);
  parts.push(h('div', { class: 'file-info' },
    h('span', { class: 'file-name', dir: 'auto', dataset: { testid: 'file-name' } }, file.name),
    h('span', { class: 'file-size muted' }, fileSize(file.size)),
    progress ? h('progress', { max: progress.total, value: progress.done, dataset: { testid: 'file-progress' },
      'aria-label': `${item.status === 'uploading' ? 'Uploading' : 'Downloading'} ${file.name}` }) : null,
    file.id && item.status !== 'uploading' && transfer?.status !== 'working' ? h('button', {
      type: 'button', class: 'small', dataset: { testid: 'file-download' }, onclick: () => files.onSave(file),
    }, inline && ready ? 'Save' : 'Download') : null));
  if (transfer?.status === 'failed') {
    parts.push(h('p', { class: 'file-error error', role: 'alert', dataset: { testid: 'file-error' } },
      `This file cannot be opened: ${transfer.error}. Nothing was saved.`));
  }
  return h('div', { class: 'file', dataset: { testid: 'file', state: transfer?.status ?? item.status ?? '', type: file.type } }, parts);
}

function messageItem(item, onDiscard, files) {
  if (item.kind === 'day') {
    return h('li', { class: 'day', dataset: { testid: 'day', day: item.key.slice(1) } }, h('span', {}, item.label));
  }
  if (item.kind === 'marker') {
    return h('li', { class: 'new-marker', id: 'new-marker', dataset: { testid: 'new-marker' } }, h('span', {}, 'New messages'));
  }
  if (item.kind === 'system') {
    return h('li', { class: `system ${item.tone}`, dataset: { testid: 'system', kind: item.tone, seq: item.seq } },
      h('span', {}, item.text), ' ', time(item.at));
  }
  if (item.kind === 'rejected') {
    return h('li', { class: 'rejected', dataset: { testid: 'undecryptable', seq: item.seq, reason: item.reason } },
      h('span', { class: 'lock-icon', 'aria-hidden': 'true' }, '⚠'),
      h('span', {}, `A message from ${shortFp(item.fp)} cannot be shown: ${item.reason}.`), ' ', time(item.at));
  }
  if (item.naming) { // my name message, not sent yet
    return h('li', { class: 'system naming', dataset: { testid: 'system', kind: 'naming-pending' } },
      h('span', {}, `Your name “${item.text}”`), ' ', item.status ? statusOf(item) : null,
      item.status === 'failed' ? h('button', {
        type: 'button', class: 'ghost small', dataset: { testid: 'discard' }, onclick: () => onDiscard(item.id),
      }, 'Discard') : null);
  }
  const unsent = item.status && item.status !== 'sent';
  return h('li', {
    class: `message${item.own ? ' own' : ''}${unsent ? ' unsent' : ''}`,
    dataset: { testid: 'message', seq: item.seq ?? '', own: item.own ? 'true' : 'false', status: item.status ?? '' },
  },
  h('div', { class: 'meta' },
    h('span', { class: `sender role-${item.role}` }, ROLE[item.role]),
    nameParts(item),
    h('span', { class: 'fp', title: `Key fingerprint ${item.fp}` }, shortFp(item.fp)),
    item.verified ? h('span', { class: 'verified', title: 'You verified this key', dataset: { testid: 'verified' } }, '✓ verified') : null,
    time(item.ts || item.at),
    item.status ? statusOf(item) : null),
  item.kind === 'file' ? fileBody(item, files)
    : h('div', { class: 'text', dir: 'auto', dataset: { testid: 'message-text' } }, messageText(item.text)),
  item.status === 'failed' ? h('button', {
    type: 'button', class: 'ghost small', dataset: { testid: 'discard' }, onclick: () => onDiscard(item.id, item.key),
  }, 'Discard') : null);
}

/** `files`: {blobOf(fileId) → Blob|null, onSave(file)}. */
export function renderRoom(room, onDiscard, files) {
  const record = room.record;
  $('room-name').textContent = record.name;
  const meta = [];
  if (room.state) meta.push(`epoch ${room.state.epoch}`, room.isOwner ? 'you own this room' : 'member');
  const mine = room.state ? room.displayName(room.myKey).name : null;
  if (mine) meta.push(`you are “${mine}”`);
  if (record.phase === 'joining') meta.push('joining');
  // Said plainly to whoever writes here (§6.6 `history`).
  meta.push(room.historyForNewMembers === 'joined' ? 'people who join later read only what comes after they join'
    : 'people who join later can read messages since the last key rotation');
  $('room-meta').textContent = meta.join(' · ');
  const active = record.status === 'active';
  const ready = active && record.phase === 'ready';
  $('invite-button').hidden = !(ready && room.isOwner);
  const verb = !active || record.phase === 'joining' ? 'Forget' : room.isOwner ? 'Delete room' : 'Leave';
  $('leave-button').textContent = verb;
  // The accessible name begins with the visible text and says it once ("Delete room", not "Delete room this room").
  if (verb === 'Delete room') $('leave-button').removeAttribute('aria-label');
  else $('leave-button').setAttribute('aria-label', `${verb} this room`);
  $('composer-input').disabled = !ready;
  $('send-button').disabled = !ready;
  $('attach-button').disabled = !ready;
  $('name-form').hidden = !ready;
  $('name-input').placeholder = mine ?? 'no name yet';

  const notice = $('room-notice');
  let text = '';
  if (record.phase === 'joining' && active) text = 'Waiting for the owner to let you in. This page completes the join by itself; the owner’s browser must be open.';
  else if (!active) text = record.statusText ?? '';
  else if (room.error) text = room.error;
  $('room-notice-text').textContent = text;
  $('dismiss-notice').hidden = !(active && room.error && room.errorDismissible);
  notice.hidden = !text;
  notice.dataset.testid = record.phase === 'joining' && active ? 'waiting' : 'notice';
  notice.className = `notice ${!active || room.error ? 'warn' : ''}`;

  renderTimeline(room, onDiscard, files);
}

/** Whether the message list shows its end (then what arrives is read, and the list follows it). */
export function atBottom() {
  const list = $('messages');
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

// The list is updated in place: an item whose content did not change keeps its element.
const rendered = new Map(); // key → {node, version}
let renderedRoom = null;

function renderTimeline(room, onDiscard, files) {
  const list = $('messages');
  const follow = atBottom();
  if (renderedRoom !== room.id) {
    rendered.clear();
    list.replaceChildren();
    revokeBlobUrls();
    renderedRoom = room.id;
  }
  const items = room.timeline();
  // The "new messages" line goes before the first message from others after the room's marker.
  if (room.marker !== null) {
    const first = items.findIndex((i) => (i.kind === 'chat' || i.kind === 'file') && !i.own && i.seq > room.marker);
    if (first >= 0) items.splice(first, 0, { kind: 'marker', key: 'marker' });
  }
  const wanted = withDays(items, clock.now()).map((item) => {
    const version = JSON.stringify(item);
    const known = rendered.get(item.key);
    if (known && known.version === version) return [item.key, known];
    return [item.key, { node: messageItem(item, onDiscard, files), version }];
  });
  placeChildren(list, wanted.map(([, { node }]) => node));
  rendered.clear();
  for (const [key, entry] of wanted) rendered.set(key, entry);
  if (follow) list.scrollTop = list.scrollHeight;
  const unread = room.unread();
  $('jump-latest').hidden = atBottom();
  $('jump-latest').textContent = unread ? `${unread} new ↓` : 'Latest ↓';
}

const memberItems = new Map(); // key → {node, version}

/** The members panel: fingerprints in full, verification marks, safety numbers, removal (owner). */
export function renderMembers(room, { onRemove, onVerify, onCopySafety }) {
  const canRemove = room.isOwner && room.record.status === 'active';
  const mine = room.members.find((m) => m.role === 'you')?.fp ?? '';
  const nodes = room.members.map((m) => {
    const verified = m.role !== 'you' && room.isVerified(m.key);
    const safety = m.role !== 'you' && mine && m.fp ? safetyNumber(mine, m.fp) : '';
    const named = room.displayName(m.key);
    const version = JSON.stringify([room.id, m.key, m.role, m.fp, verified, safety, canRemove, named]);
    const known = memberItems.get(m.key);
    if (known?.version === version) return known.node;
    const label = m.owner ? (m.role === 'you' ? 'You (owner)' : 'Owner') : ROLE[m.role];
    const node = h('li', { class: 'member', dataset: { testid: 'member', key: m.key } },
      h('div', {},
        h('span', { class: `sender role-${m.role}` }, label),
        nameParts(named),
        verified ? h('span', { class: 'verified', dataset: { testid: 'verified' } }, ' ✓ verified') : null,
        h('code', { class: 'fp-full' }, m.fp || 'unknown key'),
        m.role === 'you' ? null : h('div', { class: 'member-actions' },
          h('button', {
            type: 'button', class: 'small', dataset: { testid: 'verify-member' }, 'aria-pressed': String(verified),
            onclick: () => onVerify(m, !verified),
          }, verified ? 'Verified ✓' : 'Mark verified'),
          safety ? h('button', {
            type: 'button', class: 'small', dataset: { testid: 'copy-safety', safety }, onclick: () => onCopySafety(safety),
          }, 'Copy safety number') : null)),
      canRemove && !m.owner ? h('button', {
        type: 'button', class: 'danger small', dataset: { testid: 'remove-member' },
        'aria-label': `Remove member ${m.fp}`, onclick: () => onRemove(m),
      }, 'Remove') : null);
    memberItems.set(m.key, { node, version });
    return node;
  });
  for (const key of memberItems.keys()) if (!room.members.some((m) => m.key === key)) memberItems.delete(key);
  placeChildren($('member-list'), nodes);
}

let toastTimer;
export function toast(text) {
  const el = $('toast');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

const INVITE_STATE = {
  open: 'Open invite, not used yet', requested: 'Someone asked to join', responded: 'Answered; waiting for the joiner',
  confirmed: 'The joiner confirmed; being admitted',
};

/** The owner's open invites and pending joins (`room.invitesList`, null until asked). */
export function renderInvites(room, onRevoke) {
  const shown = room.isOwner && room.record.status === 'active' && room.record.phase === 'ready';
  $('invites-section').hidden = !shown;
  const list = shown && room.invitesList ? room.invitesList : [];
  $('no-invites').textContent = room.invitesList ? 'No open invites.' : 'Asking the server…';
  $('no-invites').hidden = list.length > 0;
  $('invite-list').replaceChildren(...list.map((e) => h('li', { class: 'member', dataset: { testid: 'open-invite', state: e.state } },
    h('div', {},
      h('span', { class: 'invite-state' }, INVITE_STATE[e.state]),
      e.fp ? h('code', { class: 'fp-full', title: 'The joiner’s key fingerprint' }, e.fp) : null,
      h('span', { class: 'small muted invite-expiry' }, 'expires ', time(e.expiresAt * 1000, true))),
    h('button', {
      type: 'button', class: 'danger small', dataset: { testid: 'revoke-invite' },
      'aria-label': e.fp ? `Revoke the join of ${e.fp}` : `Revoke the invite expiring ${dateFormat.format(new Date(e.expiresAt * 1000))}`,
      onclick: () => onRevoke(e),
    }, 'Revoke'))));
}

/** Draws `text` as a QR code (level M, a four-module quiet zone), dark on white whatever the theme. */
export function renderQr(canvas, text) {
  const qr = encodeQr(text, { level: 'M' });
  const scale = 4;
  const side = (qr.size + 8) * scale;
  canvas.width = side;
  canvas.height = side;
  canvas.dataset.version = String(qr.version);
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, side, side);
  ctx.fillStyle = '#000000';
  for (let y = 0; y < qr.size; y += 1) {
    for (let x = 0; x < qr.size; x += 1) if (qr.dark(x, y)) ctx.fillRect((x + 4) * scale, (y + 4) * scale, scale, scale);
  }
}
