// This browser's display preferences, kept in localStorage: not secret, and readable before the
// key store is unlocked (the theme applies to the lock screen too). Nothing here reaches a server.
const KEY = 'hush-settings';
export const THEMES = ['system', 'light', 'dark'];
export const AUTOLOCK_MINUTES = [0, 1, 5, 15, 60]; // 0: never

export const DEFAULTS = Object.freeze({ theme: 'system', notify: false, notifyText: false, autolockMinutes: 0 });

/** Stored text → settings; anything missing or not one of the allowed values is the default. */
export function parseSettings(text) {
  let stored = {};
  try { stored = JSON.parse(text ?? '{}'); } catch { /* defaults */ }
  if (!stored || typeof stored !== 'object') stored = {};
  return {
    theme: THEMES.includes(stored.theme) ? stored.theme : DEFAULTS.theme,
    notify: stored.notify === true,
    notifyText: stored.notifyText === true,
    autolockMinutes: AUTOLOCK_MINUTES.includes(stored.autolockMinutes) ? stored.autolockMinutes : DEFAULTS.autolockMinutes,
  };
}

/** Whether the page locks itself: idle since `lastActivity` (ms) for the chosen minutes, at `now`. */
export function idleExpired(settings, lastActivity, now) {
  return settings.autolockMinutes > 0 && now - lastActivity >= settings.autolockMinutes * 60_000;
}

export function loadSettings() {
  try { return parseSettings(localStorage.getItem(KEY)); } catch { return { ...DEFAULTS }; }
}

export function saveSettings(settings) {
  try { localStorage.setItem(KEY, JSON.stringify(settings)); } catch { /* kept for this page only */ }
}
