// Where to connect and how to authenticate, kept in localStorage so a reload reconnects
// (and resumes a running answer) without asking again.
/* global AGENTS_SERVER */
const KEY = "react-chat-settings";

export const DEFAULTS = { server: AGENTS_SERVER, token: "", name: "react-chat", useCookie: false };

export function loadSettings() {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) || "null");
    return saved ? { ...DEFAULTS, ...saved } : null;
  } catch {
    return null;
  }
}

export function saveSettings(settings) {
  if (settings) localStorage.setItem(KEY, JSON.stringify(settings));
  else localStorage.removeItem(KEY);
}

/** `useAgent` takes a bare host and a socket protocol; the form takes a URL. */
export function socketAddress(server) {
  const url = new URL(server);
  return { host: url.host, protocol: url.protocol === "https:" ? "wss" : "ws" };
}
