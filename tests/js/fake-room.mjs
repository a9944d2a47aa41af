// A web RoomClient (web/app/rooms.mjs) in node, against a fake server connection: its requests
// go to a function of the test, and its key store and cross-tab lock are kept in memory.
import { bytesToBase64, generateKeyPair } from '../../web/themis/index.mjs';
import { RoomClient } from '../../web/app/rooms.mjs';
import { newRoomState, durable } from '../../web/app/room.mjs';

export const ROOM = 'DDDDDDDDDDDDDDDDDDDDDD';

/**
 * A RoomClient whose requests go to `serve(type, fields)`; `enqueue` records what would be sent.
 * `gate`: the first requests are held until `gate` of them are in flight at once, so that the
 * budget is seen full whatever the speed (a client that never sends that many hangs the test
 * until its timeout).
 */
export async function client(serve, { gate = 0 } = {}) {
  const pair = await generateKeyPair();
  const state = newRoomState({ room: ROOM, owner: bytesToBase64(pair.publicKey), privateKey: pair.privateKey, epoch: 0, roomKey: new Uint8Array(32) });
  const record = { name: 'r', phase: 'ready', status: 'active', server: { id: 's', key: bytesToBase64(new Uint8Array(45)) },
    state: durable(state), invites: {}, outbox: [], lastRead: 0 };
  const app = { server: { wsUrl: 'ws://127.0.0.1:1/ws' }, changed: () => {}, isViewing: () => false, notify: () => {} };
  const room = new RoomClient(app, ROOM, record);
  const flight = { now: 0, max: 0 };
  const held = [];
  const release = () => { gate = 0; held.splice(0).forEach((resolve) => resolve()); };
  room.request = async (type, fields) => {
    flight.now += 1;
    flight.max = Math.max(flight.max, flight.now);
    try {
      if (gate && flight.now >= gate) release();
      if (gate) await new Promise((resolve) => held.push(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      return await serve(type, fields);
    } finally { flight.now -= 1; }
  };
  room.queued = [];
  room.enqueue = async (text, kind, file) => { room.queued.push({ text, kind, file }); };
  return { room, flight };
}

/** The same client with its real outbox: the key store and the cross-tab lock faked in memory. */
export async function clientWithOutbox(serve) {
  const made = await client(serve);
  const { room } = made;
  delete room.enqueue;
  room.connection.state = 'online';
  room.exclusive = (fn) => fn();
  room.markRead = () => {};
  room.save = async (change) => {
    const record = structuredClone(room.record);
    record.state = structuredClone(durable(room.state));
    if (change) await change(record);
    room.adopt(record);
    return true;
  };
  return made;
}
