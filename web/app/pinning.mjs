// The page's side of code pinning (web/sw.mjs, docs/CODE_TRUST.md): registers the worker and
// asks it for its verdict on what the server serves now, before the key store may be unlocked.

const WORKER = '/sw.mjs';

/** The only script URL this page ever hands to a Trusted Types sink. */
function workerUrl() {
  const policy = globalThis.trustedTypes?.createPolicy('hush-worker', {
    createScriptURL: (url) => {
      if (url !== WORKER) throw new TypeError('not the Hush service worker');
      return url;
    },
  });
  return policy ? policy.createScriptURL(WORKER) : WORKER;
}

function activated(worker) {
  return new Promise((resolve, reject) => {
    const follow = () => {
      if (worker.state === 'activated') resolve(worker);
      if (worker.state === 'redundant') reject(new Error('the service worker refused this server’s app code'));
    };
    worker.addEventListener('statechange', follow);
    follow();
  });
}

function ask(worker, message) {
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = (event) => resolve(event.data);
    worker.postMessage(message, [channel.port2]);
    // A worker replaced meanwhile never answers: null, and the caller asks its successor.
    worker.addEventListener('statechange', () => { if (worker.state === 'redundant') resolve(null); });
  });
}

/** Asks the registration's active worker, following a replacement (a signed update) twice at most. */
async function askActive(registration, message) {
  for (let attempt = 0; attempt < 3 && registration.active; attempt += 1) {
    const reply = await ask(registration.active, message);
    if (reply) return reply;
  }
  return { state: 'refused', reason: 'the service worker went away during the check' };
}

/**
 * The verdict: {state: 'pinned', release} (the server serves the pinned signed release),
 * {state: 'updated', release} (a newer signed release is now pinned: load it),
 * {state: 'refused', reason}, or {state: 'unpinned', reason} where the browser keeps no worker.
 * `onChange` is called with a verdict when the browser installs a new worker script.
 */
export async function checkCode(onChange) {
  if (!('serviceWorker' in navigator)) return { state: 'unpinned', reason: 'this browser keeps no service worker for this page' };
  let registration;
  try {
    registration = await navigator.serviceWorker.register(workerUrl(), { type: 'module', scope: '/', updateViaCache: 'none' });
  } catch (error) {
    registration = await navigator.serviceWorker.getRegistration('/');
    if (!registration?.active) return { state: 'unpinned', reason: `no service worker: ${error.message}` };
  }
  try {
    if (!registration.active) await activated(registration.installing ?? registration.waiting);
  } catch (error) {
    return { state: 'refused', reason: error.message };
  }
  // A new worker script from the server: the page locks unless what the server serves, the
  // worker script included, is still a signed release (docs/CODE_TRUST.md for what this cannot see).
  const onUpdate = () => askActive(registration, { type: 'check' }).then(onChange);
  registration.addEventListener('updatefound', onUpdate);
  if (registration.installing || registration.waiting) onUpdate();
  return askActive(registration, { type: 'check' });
}
