// The requirements.txt editor. Saving sends the hash of the text it loaded,
// so a change someone else made in the meantime is not overwritten: the API
// answers 409 with their text, which is shown beside ours, read-only.

import { ApiError, api, describeDetail, detailMessages, explain } from "./api.js";
import { byId, el, say, shortHash } from "./dom.js";
import { track } from "./progress.js";
import { release } from "./readonly.js";

/** What the editor was loaded with: the base of the next save. */
const loaded = { content: "", hash: null };

export function setUpEditor() {
  byId("editor-form").addEventListener("submit", save);
  byId("requirements-reload").addEventListener("click", () => loadEditor());
  byId("conflict-load").addEventListener("click", loadTheirs);
  byId("conflict-overwrite").addEventListener("click", keepMine);
}

function editor() {
  return byId("requirements-editor");
}

function hasUnsavedEdits() {
  return editor().value !== loaded.content;
}

function setLoaded(content, hash) {
  loaded.content = content;
  loaded.hash = hash;
}

export async function loadEditor() {
  const status = byId("editor-status");
  try {
    const current = await api.get("/api/requirements");
    setLoaded(current.content, current.hash);
    editor().value = current.content;
    clearProblems();
    say(status, `Loaded version ${shortHash(current.hash)}.`);
  } catch (error) {
    say(status, `Could not load requirements.txt: ${describeDetail(error.detail ?? error.message)}`);
  }
}

/** Reloads the editor, unless it holds edits not saved yet. */
export function refreshEditor() {
  if (!hasUnsavedEdits()) loadEditor();
}

/** requirements.txt changed on the server (a `requirements` event). */
export function requirementsChanged(hash) {
  if (hash === loaded.hash) return;
  if (!hasUnsavedEdits()) {
    loadEditor();
    return;
  }
  say(byId("editor-status"), `requirements.txt changed on the server (now ${shortHash(hash)}) `
    + "since you loaded it; saving will show both versions.");
}

function clearProblems() {
  editor().removeAttribute("aria-invalid");
  byId("requirements-error").replaceChildren();
  byId("requirements-conflict").hidden = true;
}

async function save(event) {
  event.preventDefault();
  clearProblems();
  const status = byId("editor-status");
  const button = byId("requirements-save");
  const content = editor().value;
  button.disabled = true;
  say(status, "Resolving and saving…");
  try {
    const answer = await api.put("/api/requirements", { content, expected_hash: loaded.hash });
    const changed = answer.hash !== loaded.hash;
    setLoaded(answer.content, answer.hash);
    editor().value = answer.content;
    say(status, changed ? `Saved as ${shortHash(answer.hash)}.` : "Saved: nothing changed.");
    if (changed) track(answer.hash, "Edit requirements.txt");
  } catch (error) {
    say(status, "");
    showSaveError(error);
  } finally {
    release(button);
  }
}

function showSaveError(error) {
  if (error instanceof ApiError && error.status === 409 && error.detail?.current_hash) {
    showConflict(error.detail);
    return;
  }
  if (error.readOnly) {
    // Nothing wrong with the text: the token may not save it.
    byId("requirements-error").replaceChildren(el("p", { text: `Not saved: ${explain(error)}` }));
    return;
  }
  const messages = error instanceof ApiError ? detailMessages(error.detail) : [error.message];
  editor().setAttribute("aria-invalid", "true");
  byId("requirements-error").replaceChildren(
    el("p", { text: `Not saved (${error.status ?? "no answer"}):` }),
    el("ul", {}, messages.map((message) => el("li", { text: message }))));
}

async function showConflict(detail) {
  let theirs = detail.current_content;
  if (typeof theirs !== "string") {
    // An API that does not send the other side's text: read it.
    try {
      theirs = (await api.get("/api/requirements")).content;
    } catch (error) {
      theirs = `(could not read it: ${describeDetail(error.detail ?? error.message)})`;
    }
  }
  byId("conflict-message").textContent = "Someone else changed requirements.txt since you "
    + `loaded it (it is now ${shortHash(detail.current_hash)}). Your text is still in the `
    + "editor; theirs is below. Load theirs, or keep yours and save over it.";
  const theirsBox = byId("requirements-theirs");
  theirsBox.value = theirs;
  theirsBox.dataset.hash = detail.current_hash;
  byId("requirements-conflict").hidden = false;
}

function loadTheirs() {
  const theirsBox = byId("requirements-theirs");
  setLoaded(theirsBox.value, theirsBox.dataset.hash);
  editor().value = theirsBox.value;
  clearProblems();
  say(byId("editor-status"), `Loaded their version ${shortHash(loaded.hash)}.`);
  editor().focus();
}

function keepMine() {
  // The next save replaces their version, knowingly.
  loaded.hash = byId("requirements-theirs").dataset.hash;
  byId("requirements-conflict").hidden = true;
  say(byId("editor-status"), "Your text is kept: Save to replace their version.");
  byId("requirements-save").focus();
}
