import { Component, Suspense, useState } from "react";
import { Chat } from "./Chat.jsx";
import { DEFAULTS, loadSettings, saveSettings } from "./settings.js";

export function App() {
  const [settings, setSettings] = useState(loadSettings);
  const connect = (next) => {
    saveSettings(next);
    setSettings(next);
  };
  if (!settings) return <ConnectForm onConnect={connect} />;
  return (
    <main className="app">
      <header>
        <h1>Chat</h1>
        <span className="where">
          {settings.name} on {settings.server} ({settings.useCookie ? "session cookie" : "API token"})
        </span>
        <button type="button" onClick={() => connect(null)}>
          Disconnect
        </button>
      </header>
      <ErrorBoundary>
        {/* useAgentChat suspends until get-messages has answered */}
        <Suspense fallback={<p className="loading">Loading the conversation…</p>}>
          <Chat settings={settings} />
        </Suspense>
      </ErrorBoundary>
    </main>
  );
}

function ConnectForm({ onConnect }) {
  const submit = (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    onConnect({
      server: form.get("server").trim().replace(/\/$/, ""),
      token: form.get("token").trim(),
      name: form.get("name").trim() || DEFAULTS.name,
      useCookie: form.get("useCookie") === "on",
    });
  };
  return (
    <form className="connect" onSubmit={submit}>
      <h1>Connect to an agent</h1>
      <label>
        Server <input name="server" defaultValue={DEFAULTS.server} required />
      </label>
      <label>
        API token <input name="token" type="password" autoComplete="off" placeholder="agt_…" />
      </label>
      <label>
        Conversation <input name="name" defaultValue={DEFAULTS.name} pattern="[A-Za-z0-9_-]+" />
      </label>
      <label className="inline">
        <input name="useCookie" type="checkbox" /> Use my signed-in session instead (same site only)
      </label>
      <button type="submit">Connect</button>
    </form>
  );
}

class ErrorBoundary extends Component {
  state = { error: null };

  static getDerivedStateFromError(error) {
    return { error };
  }

  render() {
    if (this.state.error) {
      return (
        <p className="fatal" role="alert">
          Could not reach the agent: {String(this.state.error.message || this.state.error)}
        </p>
      );
    }
    return this.props.children;
  }
}
