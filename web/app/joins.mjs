// Joins (docs/PROTOCOL.md §4.3, §6.2, §6.6) as pure steps: the owner's invites and answers,
// and the joiner's side. Secrets stay b64 strings so that they can live in the key store.
import { base64ToBytes, bytesToBase64, generateKeyPair } from '../themis/index.mjs';
import {
  b64, keyBytes, inviteId, inviteLink, encryptJoiningKey, decryptJoiningKey, sealJoinGrant, openJoinGrant,
  sealConfirmation, checkConfirmation, randomBytes,
} from './formats.mjs';
import { newRoomState, currentKey, signMembership } from './room.mjs';

/**
 * Owner: a fresh one-time invite. Register `inviteId` on the server, keep `token`, hand out `link`.
 * `roomName`, `ownerName`: canonical names (§6.7) the link proposes to the joiner, or null;
 * `history`: what new members may read (§6.6), 'rotation' or 'joined'; `relay`: the relay's origin
 * when `baseUrl` (the page) is not the relay, else null.
 */
export async function makeInvite(state, { baseUrl, serverFingerprint, roomName = null, ownerName = null, history = 'rotation', relay = null }) {
  const token = randomBytes(32);
  const id = bytesToBase64(await inviteId(token));
  const link = inviteLink(baseUrl, { room: state.room, token, owner: state.owner, server: serverFingerprint, roomName, ownerName, history, relay });
  return { inviteId: id, token: bytesToBase64(token), link };
}

/**
 * Owner: answers a join request with the current room key. Returns the `sealed` field of
 * `join_response` and what to remember about this join (to re-answer after a rotation).
 */
export async function respondToJoin(state, invite, { joiner, joiningKey }) {
  const secret = invite.joiningKey ? base64ToBytes(invite.joiningKey)
    : await decryptJoiningKey(b64(joiningKey, 4096), base64ToBytes(state.privateKey), keyBytes(joiner));
  const sealed = await sealJoinGrant({ room: state.room, epoch: state.epoch, key: currentKey(state) },
    secret, base64ToBytes(invite.token));
  return { sealed: bytesToBase64(sealed), remember: { joiner, joiningKey: bytesToBase64(secret), epoch: state.epoch } };
}

/** Owner: checks a join confirmation; returns the membership signature for `add_member`, or null. */
export async function confirmJoin(state, invite, { joiner, sealed }) {
  if (invite.joiner !== joiner || invite.epoch !== state.epoch) return null;
  const ok = await checkConfirmation(b64(sealed, 4096), state.room, joiner, currentKey(state), base64ToBytes(invite.token));
  return ok ? bytesToBase64(await signMembership(state, joiner)) : null;
}

/** Joiner: a fresh room key pair and joining key; returns what to keep and the `join` fields. */
export async function startJoin(invite) {
  const pair = await generateKeyPair();
  const joiningKey = randomBytes(32);
  const blob = await encryptJoiningKey(pair.privateKey, keyBytes(invite.owner), joiningKey);
  return {
    join: {
      room: invite.room, owner: invite.owner, token: bytesToBase64(invite.token), server: invite.server,
      privateKey: bytesToBase64(pair.privateKey), publicKey: bytesToBase64(pair.publicKey),
      joiningKey: bytesToBase64(joiningKey), inviteId: bytesToBase64(await inviteId(invite.token)),
    },
    joiningKeyBlob: bytesToBase64(blob),
  };
}

/** Joiner: opens the owner's join response; returns the room state and the `join_confirm` blob. */
export async function acceptGrant(join, sealedB64) {
  const token = base64ToBytes(join.token);
  const grant = await openJoinGrant(b64(sealedB64, 4096), base64ToBytes(join.joiningKey), token, join.room);
  const state = newRoomState({
    room: join.room, owner: join.owner, privateKey: base64ToBytes(join.privateKey), epoch: grant.epoch, roomKey: grant.key,
  });
  const confirmation = await sealConfirmation(join.room, join.publicKey, grant.key, token);
  return { state, confirmation: bytesToBase64(confirmation) };
}

const INVITE_STATES = new Set(['open', 'requested', 'responded', 'confirmed']);
const MAX_LISTED = 256;

/**
 * Owner: the server's `invites` reply (§4.3) → the open invites and pending joins, soonest to
 * expire first: [{inviteId, expiresAt, state, key}] (`key` is the joiner, or null). Entries of
 * another shape are left out; at most 256 are read.
 */
export function parseInviteList(reply) {
  const list = Array.isArray(reply?.invites) ? reply.invites.slice(0, MAX_LISTED) : [];
  return list.filter((e) => e && typeof e === 'object' && typeof e.inviteId === 'string' && e.inviteId.length <= 64 &&
      Number.isSafeInteger(e.expiresAt) && e.expiresAt > 0 && INVITE_STATES.has(e.state) &&
      (e.key === undefined || (typeof e.key === 'string' && e.key.length <= 128)))
    .map((e) => ({ inviteId: e.inviteId, expiresAt: e.expiresAt, state: e.state, key: e.key ?? null }))
    .sort((a, b) => a.expiresAt - b.expiresAt);
}
