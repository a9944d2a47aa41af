// The page's clock: the one place the UI reads the time of day from (day separators, auto-lock),
// so that a test can move it. Message times come from the messages themselves.
export const clock = { now: () => Date.now() };
