// Read-only mode. The read-only token (BIFROST_READ_TOKEN) opens every read
// and refuses every write with 403. The API has no route that says which
// token a request carries, so the page learns it the honest way: the first
// write refused with 403 switches the tab to read-only mode (remembered for
// this tab until sign-out). Then every control that changes something is
// disabled, and a banner says why.

import { session } from "./api.js";
import { byId } from "./dom.js";

const WHY = "The read-only token cannot change anything: "
  + "sign in with the admin token to make changes.";

/** Disables every write control under `root` (those marked `data-write`), when read-only. */
export function applyReadOnly(root = document) {
  if (!session.isReadOnly()) return;
  for (const control of root.querySelectorAll("[data-write]")) {
    if (control.tagName === "TEXTAREA") {
      control.readOnly = true; // still readable, selectable and copyable
    } else {
      control.disabled = true;
    }
    control.title = WHY;
  }
}

/** A write was refused with 403: this tab holds the read-only token. */
export function enterReadOnly() {
  session.markReadOnly();
  showReadOnly();
}

/** The banner and the disabled controls, when this tab is read-only. */
export function showReadOnly() {
  if (!session.isReadOnly()) return;
  byId("read-only").hidden = false;
  document.body.dataset.readOnly = "true";
  applyReadOnly();
}

/** Enables `button` again after a write, unless the tab is read-only now. */
export function release(button) {
  button.disabled = session.isReadOnly();
}
