// The web client's controller: reads the server key from /.well-known/hush, unlocks the key
// store, runs one RoomClient per room (following the rooms other tabs add and remove), and
// wires the page's controls to them.
import { base64ToBytes, bytesToBase64Url, fingerprint, parsePublicKey } from '../themis/index.mjs';
import { KeyStore, WrongPassword, persistenceState, requestPersistence, MAX_FILE_BYTES } from './store.mjs';
import { RoomClient, MAX_TEXT_CHARS } from './rooms.mjs';
import { parseInviteFragment, keyBytes, isWebOrigin } from './formats.mjs';
import { $, renderConnection, renderRoomList, renderRoom, renderMembers, renderInvites, renderQr, atBottom, toast } from './ui.mjs';
import { loadSettings, saveSettings, idleExpired } from './settings.mjs';
import { clock } from './clock.mjs';
import { PROTOCOL_VERSION } from './connection.mjs';
import { checkCode } from './pinning.mjs';
import { INLINE_TYPES, MAX_FILE_BYTES as MAX_SENT_FILE_BYTES, MAX_PREVIEW_BYTES } from './files.mjs';

const app = {
  store: null,
  server: null,
  rooms: new Map(),
  current: null, // id of the open room
  codeRefused: false, // the server sent code that is not a signed release: nothing unlocks
  invite: null, // a parsed invite from the page's fragment
  inviteBroken: false, // the page's fragment is not a valid invite link
  changed: (room) => scheduleRender(room),
  // Read means seen: the room is open, the tab visible and the list scrolled to its end.
  isViewing: (room) => app.current === room.id && document.visibilityState === 'visible' && atBottom(),
  notify: (room, event) => notify(room, event),
  settings: loadSettings(),
  lastActivity: clock.now(),
};

// ---- server identity (pinned: rooms remember the key they were made with) ----

/**
 * The relay this page talks to and its key. A page served by a relay talks to its own origin; a
 * copy written by `hush web export` finds no /.well-known/hush beside it and talks to the relay its
 * relay.json names (docs/PROTOCOL.md §2), which must list this page's origin in --allow-origin.
 */
async function readServer() {
  let relay = location.origin;
  let known = await readWellKnown(relay).catch(() => null);
  if (!known) {
    relay = await readRelayFile();
    known = await readWellKnown(relay).catch(() => {
      throw new Error(`The relay ${relay} cannot be reached from this page: it is down, or it does not allow pages from ${location.origin} (hush serve --allow-origin).`);
    });
    if (!known) throw new Error(`${relay} is not a Hush relay (it has no /.well-known/hush).`);
  }
  const keyB64 = String(known.publicKey);
  const key = base64ToBytes(keyB64);
  parsePublicKey(key);
  if (known.serverId !== bytesToBase64Url(key)) throw new Error('the server id is not its key');
  const ws = new URL('/ws', relay);
  ws.protocol = ws.protocol === 'https:' ? 'wss:' : 'ws:';
  return {
    id: known.serverId, key, keyB64, fingerprint: await fingerprint(key), protocol: known.protocol,
    wsUrl: ws.href, baseUrl: location.origin, relay,
    // Invites name the relay (§6.6) only when this page is not the relay itself.
    linkRelay: relay === location.origin ? null : relay,
  };
}

/** `/.well-known/hush` of `origin` (null when it has none); index.html is served byte for byte as released, so the key comes from here. */
async function readWellKnown(origin) {
  const response = await fetch(`${origin}/.well-known/hush`, { cache: 'no-store', credentials: 'omit' });
  if (response.status === 404) return null;
  const text = await response.text();
  if (!response.ok || text.length > 4096) throw new Error('no /.well-known/hush');
  return JSON.parse(text);
}

/** relay.json beside index.html, `{"relay": ORIGIN}`: what `hush web export --relay` writes. */
async function readRelayFile() {
  const missing = new Error('This page must be opened from a Hush relay (hush serve), or from a copy made by hush web export --relay.');
  const response = await fetch('relay.json', { cache: 'no-store', credentials: 'omit' }).catch(() => null);
  if (!response?.ok) throw missing;
  const text = await response.text();
  let relay;
  try { relay = text.length <= 512 ? JSON.parse(text).relay : undefined; } catch { /* refused below */ }
  if (!isWebOrigin(relay)) throw new Error('relay.json beside this page does not name a relay origin (https://host[:port]).');
  return relay;
}

// ---- rendering, batched per frame ----

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function render() {
  const rooms = [...app.rooms.values()].sort((a, b) => a.record.createdAt - b.record.createdAt);
  const room = app.rooms.get(app.current);
  if (room && app.isViewing(room)) room.markRead();
  // Scrolled up while messages arrive: they stay unread, below a "new messages" line.
  else if (room && room.marker === null && room.unread() > 0) room.marker = room.record.lastRead;
  renderRoomList(rooms, app.current, openRoom);
  $('empty-room').hidden = Boolean(room) || !$('join-panel').hidden;
  $('room-pane').hidden = !room;
  $('members-panel').hidden = !room || $('members-button').getAttribute('aria-expanded') !== 'true';
  document.body.classList.toggle('show-room', Boolean(room) || !$('join-panel').hidden);
  if (room) {
    renderRoom(room, discardMessage, { blobOf: (id) => room.fileBlob(id), onSave: (file) => saveFile(room, file) });
    renderMembers(room, { onRemove: removeMember, onVerify: verifyMember, onCopySafety: copySafety });
    renderInvites(room, revokeInvite);
    renderConnection(room.connState, room.connDetail);
  } else {
    const states = rooms.filter((r) => r.record.status === 'active').map((r) => r.connState);
    if (states.length === 0) renderConnection(rooms.length ? 'inactive' : 'none'); // no room, no connection
    else renderConnection(states.every((s) => s === 'online') ? 'online' : states.includes('connecting') ? 'connecting' : 'offline');
  }
  const unread = rooms.reduce((n, r) => n + r.unread(), 0);
  document.title = unread ? `(${unread}) Hush` : 'Hush';
}

function openRoom(id) {
  app.current = id;
  const room = app.rooms.get(id);
  // The "new messages" line goes after what was read before this visit; the list opens there.
  if (room) room.marker = room.unread() ? room.record.lastRead : null;
  $('invite-panel').hidden = true;
  $('join-panel').hidden = true;
  render();
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
  if ($('new-marker')) $('new-marker').scrollIntoView({ block: 'start' });
  scheduleRender(); // marks the room read if its end is in view
  if (window.matchMedia('(min-width: 760px)').matches) $('composer-input').focus();
}

function addRoom(id, record) {
  if (app.rooms.has(id)) return app.rooms.get(id);
  const room = new RoomClient(app, id, record);
  app.rooms.set(id, room);
  room.start();
  return room;
}

/** Another tab changed the store: follow its rooms (added, forgotten, changed). */
function syncRooms() {
  const stored = app.store.data.rooms;
  for (const [id, room] of app.rooms) {
    if (stored[id]) continue;
    room.stop();
    app.rooms.delete(id);
    if (app.current === id) app.current = null;
  }
  for (const [id, record] of Object.entries(stored)) {
    const room = app.rooms.get(id);
    if (room && room.record.createdAt !== record.createdAt) { // a new join replaced a failed one
      room.stop();
      app.rooms.delete(id);
    }
    if (app.rooms.has(id)) app.rooms.get(id).external();
    else addRoom(id, record);
  }
  scheduleRender();
}

// ---- lock screen ----

async function showLock() {
  const exists = await KeyStore.exists();
  $('lock-title').textContent = exists ? 'Unlock your keys' : 'Create your key store';
  $('lock-intro').textContent = exists
    ? 'Your room keys are sealed in this browser with your password.'
    : 'Hush keeps a fresh key for every room in this browser, sealed with a password that never leaves this device. There is no way to recover it.';
  $('confirm-row').hidden = exists;
  $('password').autocomplete = exists ? 'current-password' : 'new-password';
  $('unlock-button').textContent = exists ? 'Unlock' : 'Create key store';
  $('lock-form').dataset.mode = exists ? 'unlock' : 'create';
  // Disabled in the HTML: before this, a press would submit the bare form (refused by the CSP) and do nothing.
  $('unlock-button').disabled = false;
  $('password').focus();
}

function lockError(text) {
  $('lock-error').textContent = text;
  $('lock-error').hidden = !text;
}

async function submitLock(event) {
  event.preventDefault();
  if (app.codeRefused) return;
  const password = $('password').value;
  const creating = $('lock-form').dataset.mode === 'create';
  lockError('');
  if (creating && password.length < 8) return lockError('Use at least 8 characters.');
  if (creating && password !== $('password-confirm').value) return lockError('The two passwords differ.');
  $('unlock-button').disabled = true;
  try {
    app.store = creating ? await KeyStore.create(password) : await KeyStore.unlock(password);
  } catch (error) {
    lockError(error instanceof WrongPassword ? error.message : `Cannot open the key store: ${error.message}`);
    $('password').select();
    return;
  } finally {
    $('unlock-button').disabled = false;
  }
  $('password').value = '';
  $('password-confirm').value = '';
  unlocked();
}

function unlocked() {
  app.store.onChange = syncRooms;
  app.store.onReplaced = () => location.replace(location.pathname); // unlock the new store
  app.store.listen();
  document.body.classList.remove('locked');
  $('lock-view').hidden = true;
  $('app-view').hidden = false;
  $('lock-button').hidden = false;
  for (const [id, record] of Object.entries(app.store.data.rooms)) addRoom(id, record);
  showPersistence();
  app.lastActivity = clock.now();
  if (app.invite || app.inviteBroken) showJoin();
  render();
  // Focus: the join panel takes it itself; else the first room, or the new room's name.
  if (!app.invite && !app.inviteBroken) (document.querySelector('[data-testid=room-item]') ?? $('new-room-name')).focus();
}

const PERSISTENCE = {
  granted: 'granted',
  denied: 'not granted (the browser may clear it under pressure — export your keys)',
  asked: 'not granted yet: asked the browser, which may ask you (until then, export your keys)',
  unavailable: 'not available in this browser',
};

/**
 * Says at once whether storage is persistent, then asks for it. Some browsers never answer the
 * request (Firefox waits for a permission prompt): the line says it was asked, which is true.
 */
async function showPersistence() {
  const show = (state) => {
    $('persist-state').textContent = PERSISTENCE[state];
    $('persist-state').dataset.state = state;
  };
  const now = await persistenceState();
  show(now === 'not-granted' ? 'asked' : now);
  if (now === 'not-granted') show(await requestPersistence());
}

// ---- join flow ----

/** Reads the page's fragment as an invite link; false when there is none. */
function readInvite() {
  const fragment = location.hash.slice(1);
  app.invite = null;
  app.inviteBroken = false;
  if (!fragment) return false;
  try { app.invite = parseInviteFragment(fragment); } catch { app.inviteBroken = true; }
  return true;
}

async function showJoin() {
  const invite = app.invite;
  const earlier = invite && app.rooms.get(invite.room);
  // A join that failed or was revoked does not stand in the way of a new invite to that room.
  if (earlier && earlier.record.status === 'active') {
    clearInvite();
    return openRoom(invite.room);
  }
  app.current = null;
  $('invite-panel').hidden = true;
  $('join-panel').hidden = false;
  $('join-details').hidden = !invite;
  $('join-this-server-row').hidden = true;
  $('join-replaces').hidden = !earlier;
  $('join-button').disabled = true;
  $('join-error').hidden = true;
  $('join-help').hidden = true;
  delete $('join-check').dataset.ok;
  render();
  if (!invite) {
    $('join-cancel').focus();
    return joinError('This link is not a valid Hush invite: part of it is missing or was changed on the way.',
      'Ask the person who sent it to send the whole link again (copy it in full, or scan its QR code), then open it as it is.');
  }
  $('join-check').textContent = 'Checking the server’s key…';
  $('join-server-fp').textContent = invite.server;
  $('join-owner-fp').textContent = await fingerprint(keyBytes(invite.owner));
  if (app.invite !== invite) return; // another link was opened meanwhile
  // What the owner calls themself and the room (§6.6): their choice, so beside the fingerprint.
  $('join-owner-name').textContent = invite.ownerName === null ? '' : ` — calls themself “${invite.ownerName}”`;
  $('join-owner-name').hidden = invite.ownerName === null;
  $('join-name').value = invite.roomName ?? '';
  // Before anything is sent: the server must hold the key the invite names.
  if (app.server.protocol !== PROTOCOL_VERSION) {
    $('join-check').textContent = '';
    return joinError(`This server speaks another version of the Hush protocol (${Number(app.server.protocol)}; this page speaks ${PROTOCOL_VERSION}); nothing was sent.`);
  }
  // The invite's relay (§6.6): the one it names, else the page that showed the link (this one).
  const inviteRelay = invite.relay ?? location.origin;
  if (inviteRelay !== app.server.relay) {
    $('join-check').textContent = '';
    return joinError(`This invite is for the relay at ${inviteRelay}, and this page talks to ${app.server.relay}, so nothing was sent.`,
      'Open the link as the sender gave it, or ask them for a link made on this page.');
  }
  if (app.server.fingerprint !== invite.server) {
    $('join-check').textContent = '';
    $('join-this-server-fp').textContent = app.server.fingerprint;
    $('join-this-server-row').hidden = false;
    return joinError('This server’s key does not match the invite, so nothing was sent.',
      'If the invite was made on another Hush server, this is the wrong address: ask the sender for the server’s address and open the link there. If this is the address the sender gave you, someone may be impersonating the server: do not join, and tell the sender through another channel.');
  }
  $('join-check').textContent = '✓ The server’s key matches the invite.';
  $('join-check').dataset.ok = 'true';
  $('join-button').disabled = false;
  $('join-name').focus();
}

function joinError(text, help = '') {
  $('join-error').textContent = text;
  $('join-error').hidden = false;
  $('join-help').textContent = help;
  $('join-help').hidden = !help;
  $('join-button').disabled = true;
}

function clearInvite() {
  app.invite = null;
  app.inviteBroken = false;
  history.replaceState(null, '', location.pathname);
  $('join-panel').hidden = true;
}

async function join() {
  const name = $('join-name').value.trim() || 'Room';
  $('join-button').disabled = true;
  try {
    const record = await RoomClient.joinRecord(app, app.invite, name.slice(0, 80));
    const id = app.invite.room;
    // The join secrets are stored before the room starts and sends `join`. Another tab may
    // have started this join meanwhile: its record stays. A failed or revoked one is replaced.
    await app.store.update((data) => {
      if (!data.rooms[id] || data.rooms[id].status !== 'active') data.rooms[id] = record;
    });
    const earlier = app.rooms.get(id);
    if (earlier && earlier.record.createdAt !== app.store.data.rooms[id].createdAt) {
      earlier.stop();
      app.rooms.delete(id);
    }
    clearInvite();
    addRoom(id, app.store.data.rooms[id]);
    openRoom(id);
  } catch (error) {
    joinError(`Could not start the join: ${error.message}`);
  }
}

// ---- room actions ----

async function createRoom(event) {
  event.preventDefault();
  const name = $('new-room-name').value.trim();
  if (!name) return;
  const rotate = Number($('new-room-rotate').value);
  if (!Number.isInteger(rotate) || rotate < 1 || rotate > 10000) return toast('Rotation must be a whole number from 1 to 10000.');
  $('create-room-button').disabled = true;
  try {
    const history = $('new-room-history').value === 'joined' ? 'joined' : 'rotation';
    const { id, record } = await RoomClient.create(app, { name: name.slice(0, 80), rotateEvery: rotate, history });
    await app.store.update((data) => { data.rooms[id] = record; });
    $('new-room-name').value = '';
    addRoom(id, record);
    openRoom(id);
  } catch (error) {
    toast(`Could not create the room: ${error.message}`);
  } finally {
    $('create-room-button').disabled = false;
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const room = app.rooms.get(app.current);
  const input = $('composer-input');
  const written = input.value;
  const text = written.trim();
  if (!room || !text) return;
  if (text.length > MAX_TEXT_CHARS) return toast(`A message can have at most ${MAX_TEXT_CHARS} characters.`);
  // Taken out of the box at once: a second Enter finds it empty, and what is typed from now on
  // stays. The outbox (in the key store) holds the text until the server has it.
  input.value = '';
  try {
    await room.enqueue(text);
  } catch (error) {
    input.value = written + input.value;
    toast(`Not kept for sending: ${error.message}. Your text is back in the box.`);
  }
  input.focus();
}

// ---- files ----

const PREVIEW_SIDE = 320;

/**
 * An image's preview (§6.8): a JPEG of at most 320×320 and 32 KiB, at lower quality until it
 * fits; null when the image does not decode or never fits (then none is sent).
 */
async function makePreview(blob) {
  let bitmap;
  try { bitmap = await createImageBitmap(blob); } catch { return null; }
  const scale = Math.min(1, PREVIEW_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#ffffff'; // JPEG has no transparency
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  for (const quality of [0.8, 0.6, 0.4, 0.25, 0.1]) {
    const jpeg = await new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', quality));
    if (jpeg && jpeg.size <= MAX_PREVIEW_BYTES) return new Uint8Array(await jpeg.arrayBuffer());
  }
  return null;
}

/** Sends files the person chose, dropped or pasted, one after the other (the server holds 4 pending per key). */
async function attachFiles(list) {
  const room = app.rooms.get(app.current);
  if (!room || room.record.phase !== 'ready' || room.record.status !== 'active') return;
  for (const file of list) {
    if (file.size > MAX_SENT_FILE_BYTES) {
      toast(`“${file.name}” is too large: a file has at most 25 MiB.`);
      continue;
    }
    try {
      const bytes = new Uint8Array(await file.arrayBuffer());
      const preview = INLINE_TYPES.has(file.type) ? await makePreview(file) : null;
      await room.sendFile({ bytes, name: file.name, type: file.type, preview });
    } catch (error) {
      toast(`“${file.name}” was not sent: ${error.message}`);
    }
  }
}

/**
 * Saves a file through a Blob URL, after it was fetched and checked in this page (a file that
 * fails a check is never offered); the URL is revoked once the download had time to start.
 */
async function saveFile(room, file) {
  await room.download(file);
  const blob = room.fileBlob(file.id);
  if (!blob) return; // the message shows why
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = file.name;
  link.rel = 'noopener';
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function setName(event) {
  event.preventDefault();
  const room = app.rooms.get(app.current);
  const input = $('name-input');
  if (!room) return;
  try {
    const name = await room.setName(input.value);
    input.value = '';
    toast(`Your name in this room is now “${name}”.`);
  } catch (error) {
    toast(`Name not set: ${error.message}.`);
  }
}

async function discardMessage(id, key) {
  const room = app.rooms.get(app.current);
  if (room && key.startsWith('u')) return room.dismissUpload(id); // a file that did not upload: nothing was sent
  if (!room || !confirm('Discard this unsent message?')) return;
  try {
    await room.discard(id);
  } catch (error) {
    toast(`Could not discard: ${error.message}`);
  }
}

async function makeInvite() {
  const room = app.rooms.get(app.current);
  if (!room) return;
  $('invite-button').disabled = true;
  try {
    const link = await room.invite();
    $('invite-link').value = link;
    renderQr($('invite-qr'), link);
    $('invite-panel').hidden = false;
    await copyInvite();
  } catch (error) {
    toast(`Could not make an invite: ${error.message}`);
  } finally {
    $('invite-button').disabled = false;
  }
}

async function copyInvite() {
  const input = $('invite-link');
  try {
    await navigator.clipboard.writeText(input.value);
    $('invite-status').textContent = 'Copied. It opens the join flow in any browser, once.';
  } catch {
    input.select();
    $('invite-status').textContent = window.matchMedia('(pointer: coarse)').matches
      ? 'Selected — copy it from your device’s menu. It works once.'
      : 'Selected — press Ctrl+C (⌘C) to copy. It works once.';
  }
}

async function revokeInvite(entry) {
  const room = app.rooms.get(app.current);
  const what = entry.fp ? `the join of ${entry.fp}` : 'this invite';
  if (!room || !confirm(`Revoke ${what}? The link stops working${entry.fp ? ' and the joiner is told' : ''}.`)) return;
  try {
    await room.revokeInvite(entry.inviteId);
    toast('Invite revoked.');
  } catch (error) {
    toast(`Could not revoke: ${error.message}`);
  }
}

function showMembers(open) {
  $('members-button').setAttribute('aria-expanded', String(open));
  const room = app.rooms.get(app.current);
  if (open && room?.isOwner && room.record.phase === 'ready' && room.record.status === 'active') {
    room.listInvites().catch((error) => toast(`Could not list the invites: ${error.message}`));
  }
  render();
}

async function verifyMember(member, verified) {
  const room = app.rooms.get(app.current);
  if (!room) return;
  if (verified && !confirm(`Mark this key verified?\n\n${member.fp}\n\nOnly if the person read you this fingerprint (or the safety number) through another channel — in person, or on a call where you know their voice.`)) return;
  try {
    await room.setVerified(member.key, verified);
  } catch (error) {
    toast(`Could not save: ${error.message}`);
  }
}

async function copySafety(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast('Safety number copied. Compare it with the other person through another channel.');
  } catch {
    toast(`Safety number: ${text}`);
  }
}

async function removeMember(member) {
  const room = app.rooms.get(app.current);
  if (!room || !confirm(`Remove the member ${member.fp}? The room key is replaced so that this key cannot read new messages.`)) return;
  try {
    await room.remove(member.key);
    toast('Member removed; the room key was rotated.');
  } catch (error) {
    toast(`Could not remove: ${error.message}`);
  }
}

async function leaveRoom() {
  const room = app.rooms.get(app.current);
  if (!room) return;
  const verb = $('leave-button').textContent;
  const warning = verb === 'Delete room' ? 'Delete this room for everyone? Its history is gone for good.'
    : verb === 'Leave' ? 'Leave this room? This key can never come back; you would need a new invite.'
      : 'Forget this room on this device?';
  if (!confirm(warning)) return;
  try {
    await room.leaveOrDelete();
  } catch (error) {
    return toast(`Could not ${verb.toLowerCase()}: ${error.message}`);
  }
  app.rooms.delete(room.id);
  room.stop();
  await app.store.update((data) => { delete data.rooms[room.id]; });
  app.current = null;
  render();
}

// ---- settings: theme, notifications, auto-lock (web/app/settings.mjs) ----

function applyTheme() {
  if (app.settings.theme === 'system') delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = app.settings.theme;
}

function showSettings() {
  $('theme-select').value = app.settings.theme;
  $('autolock-select').value = String(app.settings.autolockMinutes);
  $('notify-toggle').checked = app.settings.notify;
  $('notify-text').checked = app.settings.notifyText;
  $('notify-text').disabled = !app.settings.notify;
}

function changeSettings(change) {
  app.settings = { ...app.settings, ...change };
  saveSettings(app.settings);
  applyTheme();
  showSettings();
}

async function toggleNotifications() {
  if (!$('notify-toggle').checked) return changeSettings({ notify: false });
  if (!('Notification' in window)) {
    toast('This browser cannot show notifications.');
    return changeSettings({ notify: false });
  }
  const permission = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
  if (permission !== 'granted') toast('The browser did not allow notifications for this page.');
  changeSettings({ notify: permission === 'granted' });
}

/** A message from someone else arrived: a notification, only while the tab is hidden and if chosen. */
function notify(room, event) {
  if (!app.settings.notify || document.visibilityState !== 'hidden' || !('Notification' in window)) return;
  if (Notification.permission !== 'granted') return;
  const text = event.type === 'file' ? `File: ${event.file.name}` : event.text;
  const body = app.settings.notifyText ? String(text).slice(0, 200) : 'New message';
  const note = new Notification(`Hush — ${room.record.name}`, { body, tag: room.id });
  note.addEventListener('click', () => { window.focus(); openRoom(room.id); note.close(); });
}

/** Locks the key store (the page starts afresh) once idle for the chosen time. */
function checkIdle() {
  if (app.store && idleExpired(app.settings, app.lastActivity, clock.now())) lock();
}

function lock() {
  location.replace(location.pathname);
}

// ---- key store file ----

async function exportKeys() {
  const text = await app.store.exportText();
  const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  const a = Object.assign(document.createElement('a'), { href: url, download: `hush-keys-${new Date().toISOString().slice(0, 10)}.json` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  toast('Exported. The file is sealed with your password.');
}

function openImport() {
  $('import-form').reset();
  importError('');
  $('import-dialog').showModal();
}

function importError(text) {
  $('import-error').textContent = text;
  $('import-error').hidden = !text;
}

/** Replaces the store with a file's, once the file's password opens it; nothing changes before. */
async function importKeys(event) {
  event.preventDefault();
  const file = $('import-file').files?.[0];
  const password = $('import-password').value;
  importError('');
  if (!file || !password) return importError('Pick the file and enter its password.');
  // Refuse by size before reading: a file picked by mistake may be gigabytes.
  if (file.size > MAX_FILE_BYTES) return importError('The file is too large to be a key store.');
  if (await KeyStore.exists() && !confirm('Replace the keys in this browser with the file’s? Keys not in the file are lost.')) return;
  $('import-button').disabled = true;
  let store;
  try {
    store = await KeyStore.importText(await file.text(), password);
  } catch (error) {
    $('import-password').select();
    return importError(error.message);
  } finally {
    $('import-button').disabled = false;
  }
  $('import-dialog').close();
  // Rooms of the old store may run in this page: start afresh on the imported one.
  if (app.store) return location.replace(location.pathname + location.hash);
  app.store = store;
  unlocked();
}

// ---- code pinning (web/sw.mjs): no unlock unless the server serves a signed release ----

function showRelease(verdict) {
  const text = verdict.state === 'pinned'
    ? `Hush web release ${verdict.release}, signed, pinned in this browser${verdict.offline ? ' (offline: not checked with the server)' : ''}`
    : `Not pinned: ${verdict.reason}`;
  $('release-state').textContent = text;
  $('release-state').dataset.state = verdict.state;
  $('release-state-device').textContent = text;
}

/** Blocks the page: what the keys would be unlocked by is not a signed release. */
function refuseCode(reason) {
  app.codeRefused = true;
  for (const room of app.rooms.values()) room.stop();
  app.rooms.clear();
  app.store = null;
  document.body.classList.add('locked', 'code-refused');
  $('lock-view').hidden = true;
  $('app-view').hidden = true;
  $('lock-button').hidden = true;
  $('release-error-reason').textContent = reason;
  $('release-error').hidden = false;
}

function codeChanged(verdict) {
  if (verdict.state === 'refused') refuseCode(verdict.reason);
  else if (!app.codeRefused) showRelease({ ...verdict, state: 'pinned' }); // an update is pinned from the next load on
}

// ---- start ----

async function start() {
  applyTheme();
  showSettings();
  try {
    app.server = await readServer();
    $('server-fp').textContent = app.server.fingerprint;
  } catch (error) {
    document.body.textContent = error.message;
    return;
  }
  const verdict = await checkCode(codeChanged);
  if (verdict.state === 'updated') return location.reload(); // the newer signed release, now pinned
  if (verdict.state === 'refused') return refuseCode(verdict.reason);
  if (app.codeRefused) return; // a new worker was refused meanwhile
  showRelease(verdict);
  readInvite();
  // A link pasted into this tab's address bar changes only the fragment: no reload.
  window.addEventListener('hashchange', () => {
    if (readInvite() && app.store) showJoin();
  });
  $('lock-form').addEventListener('submit', submitLock);
  $('import-open-lock').addEventListener('click', openImport);
  $('import-open').addEventListener('click', openImport);
  $('import-form').addEventListener('submit', importKeys);
  $('import-cancel').addEventListener('click', () => $('import-dialog').close());
  $('export-button').addEventListener('click', exportKeys);
  $('lock-button').addEventListener('click', lock);
  $('theme-select').addEventListener('change', () => changeSettings({ theme: $('theme-select').value }));
  $('autolock-select').addEventListener('change', () => {
    app.lastActivity = clock.now();
    changeSettings({ autolockMinutes: Number($('autolock-select').value) });
  });
  $('notify-toggle').addEventListener('change', toggleNotifications);
  $('notify-text').addEventListener('change', () => changeSettings({ notifyText: $('notify-text').checked }));
  for (const type of ['pointerdown', 'keydown', 'wheel', 'touchstart']) {
    document.addEventListener(type, () => { app.lastActivity = clock.now(); }, { capture: true, passive: true });
  }
  setInterval(checkIdle, 5000);
  $('messages').addEventListener('scroll', () => { if (app.store) scheduleRender(); }, { passive: true });
  $('jump-latest').addEventListener('click', () => {
    const list = $('messages');
    list.scrollTop = list.scrollHeight;
    scheduleRender();
  });
  $('new-room-form').addEventListener('submit', createRoom);
  $('composer').addEventListener('submit', sendMessage);
  $('name-form').addEventListener('submit', setName);
  $('attach-button').addEventListener('click', () => $('file-input').click());
  $('file-input').addEventListener('change', () => {
    const files = [...$('file-input').files];
    $('file-input').value = '';
    attachFiles(files);
  });
  // Files dropped onto the conversation, and images pasted into the message box.
  const pane = $('room-pane');
  pane.addEventListener('dragover', (event) => {
    if (!event.dataTransfer?.types.includes('Files') || $('attach-button').disabled) return;
    event.preventDefault();
    pane.classList.add('dropping');
  });
  pane.addEventListener('dragleave', (event) => { if (!pane.contains(event.relatedTarget)) pane.classList.remove('dropping'); });
  pane.addEventListener('drop', (event) => {
    pane.classList.remove('dropping');
    if (!event.dataTransfer?.files.length || $('attach-button').disabled) return;
    event.preventDefault();
    attachFiles([...event.dataTransfer.files]);
  });
  $('composer-input').addEventListener('paste', (event) => {
    const images = [...(event.clipboardData?.files ?? [])].filter((f) => INLINE_TYPES.has(f.type));
    if (images.length === 0) return; // text is pasted as usual
    event.preventDefault();
    attachFiles(images);
  });
  $('composer-input').addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' || event.shiftKey || event.isComposing) return;
    event.preventDefault(); // no newline in the box
    if (!event.repeat) $('composer').requestSubmit(); // a held key sends once
  });
  $('invite-button').addEventListener('click', makeInvite);
  $('copy-invite').addEventListener('click', copyInvite);
  $('close-invite').addEventListener('click', () => { $('invite-panel').hidden = true; });
  $('leave-button').addEventListener('click', leaveRoom);
  $('members-button').addEventListener('click', () => showMembers($('members-button').getAttribute('aria-expanded') !== 'true'));
  $('close-members').addEventListener('click', () => { showMembers(false); $('members-button').focus(); });
  document.addEventListener('keydown', (event) => {
    if (event.key !== 'Escape' || $('members-panel').hidden || document.querySelector('dialog[open]')) return;
    showMembers(false);
    $('members-button').focus();
  });
  // On a phone the panel lies over the room: a tap outside it closes it.
  document.addEventListener('pointerdown', (event) => {
    if ($('members-panel').hidden || !window.matchMedia('(max-width: 759px)').matches) return;
    if (!event.target.closest('#members-panel, #members-button')) showMembers(false);
  });
  $('dismiss-notice').addEventListener('click', () => app.rooms.get(app.current)?.dismissError());
  $('join-button').addEventListener('click', join);
  $('join-cancel').addEventListener('click', () => { clearInvite(); render(); });
  $('back-button').addEventListener('click', () => { app.current = null; render(); });
  window.addEventListener('online', () => { for (const room of app.rooms.values()) room.connection.retryNow(); });
  document.addEventListener('visibilitychange', () => {
    checkIdle();
    if (app.store) render();
  });
  await showLock();
}

start();
