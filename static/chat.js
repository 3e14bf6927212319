// The chat page's small script: keyboard shortcuts, copy buttons, attachments, the tab's
// title, and the tools the agent asks the browser to run. Tool outputs go back over the page socket as a `tool_result` action,
// which the server applies through the same function as cf_agent_tool_result.
(() => {
  "use strict";

  // One implementation per tool declared in agents_app/ui/browser_tools.py (same names).
  const browserTools = {
    get_timezone: async () => ({ timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone }),
    getUserTimezone: async () => Intl.DateTimeFormat().resolvedOptions().timeZone,
    get_location: () => new Promise((resolve, reject) => {
      if (!("geolocation" in navigator)) {
        reject(new Error("This browser cannot share its location."));
        return;
      }
      navigator.geolocation.getCurrentPosition(
        (position) => resolve({
          latitude: position.coords.latitude,
          longitude: position.coords.longitude,
          accuracyMeters: position.coords.accuracy,
        }),
        (error) => reject(new Error(error.code === error.PERMISSION_DENIED
          ? "The user did not allow access to their location."
          : `The location is unavailable: ${error.message}`)),
        { timeout: 10000, maximumAge: 60000 },
      );
    }),
  };
  const answeredCalls = new Set();

  async function runBrowserTool(form) {
    const callId = form.dataset.toolCall;
    if (answeredCalls.has(callId)) return;
    answeredCalls.add(callId);
    const run = browserTools[form.dataset.tool];
    let output = "";
    let failure = "";
    try {
      output = JSON.stringify(await run());
    } catch (error) {
      failure = error.message || String(error);
    }
    // Another call's answer may have re-rendered the conversation while this tool ran: a
    // detached form submits nothing, so answer through the form for this call shown now.
    const current = form.isConnected
      ? form
      : document.querySelector(`form.browser-tool[data-tool-call="${CSS.escape(callId)}"]`);
    if (!current) return; // answered meanwhile (e.g. in another tab)
    current.elements.output.value = output;
    current.elements.error.value = failure;
    current.requestSubmit();
  }

  function scan(root) {
    if (root.matches && root.matches("form.browser-tool")) runBrowserTool(root);
    root.querySelectorAll("form.browser-tool").forEach(runBrowserTool);
  }

  document.addEventListener("keydown", (event) => {
    const composer = event.target.closest && event.target.closest("#composer, .edit-form");
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && composer) {
      event.preventDefault();
      composer.requestSubmit();
    } else if (event.key === "Escape") {
      const stop = document.getElementById("stop");
      if (stop && document.querySelector("#streaming-slot .message")) stop.click();
    }
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    try {
      await navigator.clipboard.writeText(button.dataset.copy);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  });

  // Follow the conversation as it grows, unless the reader has scrolled up to read.
  let followOutput = true;
  const conversation = () => document.getElementById("conversation");
  const scrollToEnd = () => { const box = conversation(); if (box) box.scrollTop = box.scrollHeight; };
  document.addEventListener("htmx:wsBeforeMessage", () => {
    const box = conversation();
    followOutput = !box || box.scrollHeight - box.scrollTop - box.clientHeight < 120;
  });
  document.addEventListener("htmx:wsAfterMessage", () => { if (followOutput) scrollToEnd(); });
  document.addEventListener("DOMContentLoaded", scrollToEnd);
  // Ready to type (autofocus alone is skipped when the document was not focused at load).
  document.addEventListener("DOMContentLoaded", () => {
    const message = document.getElementById("message");
    if (message && document.activeElement === document.body) message.focus();
  });

  // Attachments: picked with the paperclip button or dropped anywhere on the conversation.
  const fileInput = () => document.getElementById("files");
  function showChosenFiles() {
    const list = document.getElementById("chosen-files");
    const input = fileInput();
    if (!list || !input) return;
    list.replaceChildren(...Array.from(input.files).map((file) => {
      const item = document.createElement("li");
      item.textContent = `${file.name} (${Math.max(1, Math.round(file.size / 1000))} kB)`;
      return item;
    }));
  }
  document.addEventListener("change", (event) => { if (event.target.id === "files") showChosenFiles(); });
  document.addEventListener("dragover", (event) => {
    if (fileInput() && event.dataTransfer && event.dataTransfer.types.includes("Files")) {
      event.preventDefault();
      document.body.classList.add("dropping");
    }
  });
  document.addEventListener("dragleave", (event) => { if (!event.relatedTarget) document.body.classList.remove("dropping"); });
  document.addEventListener("drop", (event) => {
    const input = fileInput();
    document.body.classList.remove("dropping");
    if (!input || !event.dataTransfer || !event.dataTransfer.files.length) return;
    event.preventDefault();
    const all = new DataTransfer();
    for (const file of [...input.files, ...event.dataTransfer.files]) all.items.add(file);
    input.files = all.files;
    showChosenFiles();
  });
  // The server answers a message it took with this event; on an error the text stays, and
  // so does a next message typed while the request was on its way.
  let sentText = null;
  document.addEventListener("htmx:beforeRequest", (event) => {
    if (event.detail.elt.id === "composer") sentText = document.getElementById("message").value;
  });
  document.body.addEventListener("composer-sent", () => {
    const message = document.getElementById("message");
    if (!message || message.value !== sentText) return;
    document.getElementById("composer").reset();
    showChosenFiles();
    message.focus();
  });

  // A conversation's title arrives after its first answer: the tab's title follows it.
  function syncDocumentTitle() {
    const heading = document.getElementById("chat-title");
    const main = document.querySelector("main.chat");
    if (heading && main) document.title = `${heading.textContent.trim()} · ${main.dataset.agentTitle}`;
  }
  document.addEventListener("htmx:wsAfterMessage", syncDocumentTitle);

  // htmx:load fires after htmx has processed new content, so the ws-send forms are live.
  document.addEventListener("htmx:load", (event) => scan(event.detail.elt));
  document.addEventListener("htmx:wsOpen", () => scan(document));
})();
