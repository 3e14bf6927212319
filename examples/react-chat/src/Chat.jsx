import { useState } from "react";
import { useAgent } from "agents/react";
import { useAgentChat } from "@cloudflare/ai-chat/react";
import { Message } from "./Message.jsx";
import { socketAddress } from "./settings.js";

// Tools the server declares for the browser to answer (client tools): name → answer.
const BROWSER_TOOLS = {
  getUserTimezone: () => Intl.DateTimeFormat().resolvedOptions().timeZone,
  get_timezone: () => Intl.DateTimeFormat().resolvedOptions().timeZone,
};

export function Chat({ settings }) {
  const [connection, setConnection] = useState("connecting");
  const agent = useAgent({
    agent: "ChatAgent",
    name: settings.name,
    ...socketAddress(settings.server),
    // An API token per user; without one the browser's session cookie authenticates.
    query: settings.useCookie ? undefined : { token: settings.token },
    onOpen: () => setConnection("connected"),
    onClose: (event) => setConnection(event.code === 4001 ? "refused: sign in or check the token" : "reconnecting"),
  });
  const chat = useAgentChat({
    agent,
    credentials: settings.useCookie ? "include" : undefined, // get-messages sends the cookie
    onToolCall: async ({ toolCall, addToolOutput }) => {
      const answer = BROWSER_TOOLS[toolCall.toolName];
      if (answer) addToolOutput({ toolCallId: toolCall.toolCallId, output: answer(toolCall.input) });
    },
  });
  const { messages, status, error, stop, regenerate, clearHistory, sendMessage, isServerStreaming } = chat;
  const busy = status === "submitted" || status === "streaming" || isServerStreaming;
  const lastAssistant = messages.findLast((m) => m.role === "assistant");

  const switchBranch = (messageId) => agent.call("switch_branch", [messageId]);
  const answerApproval = (approvalId, approved) => chat.addToolApprovalResponse({ id: approvalId, approved });

  return (
    <section className="chat">
      <p className="status" data-connection={connection} data-busy={busy ? "yes" : "no"}>
        {connection}
        {isServerStreaming && status !== "streaming" ? " · resuming the answer…" : ""}
        {chat.isRecovering ? " · recovering an interrupted answer…" : ""}
      </p>
      <ol className="messages">
        {messages.map((message) => (
          <Message
            key={message.id}
            message={message}
            streaming={busy && message === lastAssistant}
            onSwitchBranch={switchBranch}
            onApproval={answerApproval}
          />
        ))}
      </ol>
      {error ? (
        <p className="error" role="alert">
          {error.message}
        </p>
      ) : null}
      <Composer busy={busy} onSend={(text) => sendMessage({ text })} onStop={stop} />
      <div className="actions">
        <button type="button" className="regenerate" disabled={busy || !lastAssistant} onClick={() => regenerate()}>
          Regenerate
        </button>
        <button type="button" className="clear" disabled={busy || messages.length === 0} onClick={clearHistory}>
          Clear
        </button>
      </div>
    </section>
  );
}

function Composer({ busy, onSend, onStop }) {
  const [text, setText] = useState("");
  const submit = (event) => {
    event.preventDefault();
    if (!text.trim() || busy) return;
    onSend(text);
    setText("");
  };
  return (
    <form className="composer" onSubmit={submit}>
      <input
        name="message"
        aria-label="Message"
        placeholder="Ask something…"
        value={text}
        onChange={(event) => setText(event.target.value)}
        autoComplete="off"
      />
      {busy ? (
        <button type="button" className="stop" onClick={onStop}>
          Stop
        </button>
      ) : (
        <button type="submit" className="send">
          Send
        </button>
      )}
    </form>
  );
}
