// The console's chat: each model's box keeps its conversation, sends it to POST /v1/chat/completions
// (same origin: the browser adds the key's cookie), and under each reply offers thumbs and a better
// answer, posted to POST /v1/chat/completions/{id}/feedback. Replies are written as text, never HTML.
"use strict";

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (data.error && data.error.message) || response.statusText;
    throw new Error(response.status === 401 ? message + " (log in again at /console/login)" : message);
  }
  return data;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function say(list, role, text) {
  const item = element("li", "message " + role);
  item.appendChild(element("div", "content", text));
  list.appendChild(item);
  return item;
}

function feedbackControls(completionId) {
  const box = element("div", "feedback");
  const status = element("span", "feedback-status");
  status.setAttribute("role", "status");
  const send = async (body, done) => {
    status.textContent = "saving…";
    status.classList.remove("error");
    try {
      await postJSON("/v1/chat/completions/" + encodeURIComponent(completionId) + "/feedback", body);
      status.textContent = "feedback saved";
      done();
    } catch (error) {
      status.textContent = "feedback not saved: " + error.message;
      status.classList.add("error");
    }
  };
  // drawn from plain text, not emoji: a machine without an emoji font shows boxes
  const up = element("button", "thumb thumb-up", "▲ good");
  const down = element("button", "thumb thumb-down", "▼ bad");
  up.type = down.type = "button";
  up.title = "thumbs up: a good answer (score 1)";
  down.title = "thumbs down: a bad answer (score -1)";
  const thumb = (button, score) => () => send({score}, () => {
    up.classList.remove("chosen");
    down.classList.remove("chosen");
    button.classList.add("chosen");
  });
  up.addEventListener("click", thumb(up, 1));
  down.addEventListener("click", thumb(down, -1));

  const form = element("form", "correction-form");
  const text = element("textarea", "correction-input");
  text.rows = 2;
  text.placeholder = "write the better answer";
  text.setAttribute("aria-label", "the better answer");
  const submit = element("button", "correction-send", "Send the better answer");
  submit.type = "submit";
  form.append(text, submit);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (text.value.trim()) send({correction: text.value}, () => { text.disabled = submit.disabled = true; });
  });
  box.append(up, down, form, status);
  return box;
}

function startChat(chat, storeOn) {
  const model = chat.dataset.model;
  const list = chat.querySelector(".messages");
  const form = chat.querySelector(".chat-form");
  const input = chat.querySelector(".chat-input");
  const button = chat.querySelector(".chat-send");
  const conversation = [];
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || button.disabled) return;
    conversation.push({role: "user", content: text});
    say(list, "user", text);
    input.value = "";
    button.disabled = true;
    const waiting = say(list, "assistant pending", "…");
    try {
      const reply = await postJSON("/v1/chat/completions", {model, messages: conversation});
      const content = reply.choices[0].message.content;
      conversation.push({role: "assistant", content});
      waiting.className = "message assistant";
      waiting.dataset.completionId = reply.id;
      waiting.querySelector(".content").textContent = content;
      if (storeOn) waiting.appendChild(feedbackControls(reply.id));
    } catch (error) {
      conversation.pop();  // not answered: the next message is sent without it
      waiting.className = "message error";
      waiting.querySelector(".content").textContent = "no reply: " + error.message;
    } finally {
      button.disabled = false;
      input.focus();
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const storeOn = document.body.dataset.store === "on";
  document.querySelectorAll(".chat").forEach((chat) => startChat(chat, storeOn));
});
