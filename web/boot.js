// Runs before the app's modules. When the browser refuses the app's code (a file that does not
// match its integrity hash, or one that is missing), no module runs at all: this says so in
// plain words instead of leaving a blank page, and the key store is never opened.
'use strict';
document.addEventListener('error', (event) => {
  if (!(event.target instanceof HTMLScriptElement)) return;
  const warning = document.getElementById('code-error');
  if (!warning) return;
  warning.hidden = false;
  document.body.classList.add('code-refused');
  document.getElementById('lock-view')?.setAttribute('hidden', '');
}, true);
