// Talking to the API: the token (sessionStorage, this tab only), a fetch
// wrapper that sends it in the Authorization header (never in a URL), and
// the errors it raises. Listeners hear when the API stops or starts
// answering, when the token is refused, and when a write is refused because
// the token is the read-only one.

// The admin token or the read-only one (the key predates the read-only token).
const TOKEN_KEY = "bifrost.adminToken";
// "1" once a write was refused with 403: this tab signed in with the read-only token.
const READ_ONLY_KEY = "bifrost.readOnly";
const READ_METHODS = new Set(["GET", "HEAD"]);

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => {
    sessionStorage.setItem(TOKEN_KEY, token);
    sessionStorage.removeItem(READ_ONLY_KEY);
  },
  signOut: () => {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(READ_ONLY_KEY);
  },
  isReadOnly: () => sessionStorage.getItem(READ_ONLY_KEY) === "1",
  markReadOnly: () => sessionStorage.setItem(READ_ONLY_KEY, "1"),
};

/** The API answered with an error status; `detail` is its `detail` (any shape). */
export class ApiError extends Error {
  constructor(status, detail, readOnly = false) {
    super(`HTTP ${status}: ${describeDetail(detail)}`);
    this.status = status;
    this.detail = detail;
    // A write refused because the token is the read-only one.
    this.readOnly = readOnly;
  }
}

/** What went wrong, in one sentence for the line next to the control. */
export function explain(error) {
  if (error?.readOnly) return `This token is read-only: ${describeDetail(error.detail)}`;
  if (error instanceof ApiError) return describeDetail(error.detail);
  return error?.message ?? String(error);
}

/** The request never got an answer (server down, network gone). */
export class Unreachable extends Error {}

const listeners = {
  unreachable: new Set(), reachable: new Set(), unauthorized: new Set(), readonly: new Set(),
};

export function on(name, listener) {
  listeners[name].add(listener);
}

export function emit(name, value) {
  for (const listener of listeners[name]) listener(value);
}

export function authHeaders(extra = {}) {
  return { Authorization: `Bearer ${session.token() ?? ""}`, ...extra };
}

async function readJson(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** fetch that raises Unreachable when no answer comes back. */
export async function send(path, init = {}) {
  try {
    const response = await fetch(path, { cache: "no-store", ...init });
    emit("reachable");
    return response;
  } catch (error) {
    if (error.name === "AbortError") throw error;
    emit("unreachable", error);
    throw new Unreachable(`API unreachable (${error.message})`);
  }
}

/** One API call: the parsed JSON answer, or ApiError / Unreachable. */
export async function request(method, path, body) {
  const init = { method, headers: authHeaders() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await send(path, init);
  const data = await readJson(response);
  if (response.status === 401) emit("unauthorized");
  if (!response.ok) {
    const detail = data && typeof data === "object" && "detail" in data ? data.detail : data;
    // The API's only 403 is the read-only token on a write (src/api/auth.py).
    const readOnly = response.status === 403 && !READ_METHODS.has(method);
    if (readOnly) emit("readonly", detail);
    throw new ApiError(response.status, detail, readOnly);
  }
  return data;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body = {}) => request("POST", path, body),
  put: (path, body) => request("PUT", path, body),
  delete: (path) => request("DELETE", path),
};

/** A readable sentence from any `detail` the API sends. */
export function describeDetail(detail) {
  return detailMessages(detail).join("; ");
}

/**
 * `detail` as a list of messages: one per pydantic error, one per bad
 * requirement line (`{message, errors: [{line, text, reason}]}`), else one.
 */
export function detailMessages(detail) {
  if (detail === null || detail === undefined) return ["no details"];
  if (typeof detail === "string") return [detail];
  if (Array.isArray(detail)) return detail.map(describeValidationError);
  if (typeof detail === "object") {
    if (Array.isArray(detail.errors) && detail.errors.length) {
      return detail.errors.map(describeLineError);
    }
    return [detail.message ? String(detail.message) : JSON.stringify(detail)];
  }
  return [String(detail)];
}

/** `{line, text, reason}`, one bad requirement line. */
export function describeLineError(error) {
  if (!error || typeof error !== "object") return String(error);
  // Line 0 is an install request's own field: its reason quotes it already.
  const where = error.line ? `line ${error.line}` : "";
  const text = error.line && error.text ? `"${error.text}"` : "";
  return [[where, text].filter(Boolean).join(" "), error.reason].filter(Boolean).join(": ");
}

/** A pydantic error `{loc, msg}`: "version: Input should be a valid string". */
export function describeValidationError(error) {
  if (!error || typeof error !== "object") return String(error);
  const place = (error.loc ?? []).filter((step) => step !== "body").join(".");
  return place ? `${place}: ${error.msg}` : String(error.msg ?? JSON.stringify(error));
}

/**
 * Which form field each message of an error belongs to: a Map of field name
 * -> [messages]. Pydantic errors name their field in `loc`; bad requirement
 * lines (`{errors: [{line, text, reason}]}`) go where `fieldOfLine` says;
 * anything else (a string, `{message, ...}`) goes to `fallbackField`.
 */
export function errorsByField(error, fields, fallbackField, fieldOfLine = () => fallbackField) {
  const found = new Map();
  const add = (field, message) => found.set(field, [...(found.get(field) ?? []), message]);
  const detail = error instanceof ApiError ? error.detail : undefined;
  if (Array.isArray(detail)) {
    for (const item of detail) {
      const field = (item?.loc ?? []).find((step) => fields.includes(step));
      add(field ?? fallbackField, describeValidationError(item));
    }
  } else if (Array.isArray(detail?.errors) && detail.errors.length) {
    for (const line of detail.errors) add(fieldOfLine(line), describeLineError(line));
  } else if (error instanceof ApiError) {
    add(fallbackField, explain(error));
  } else {
    add(fallbackField, error.message);
  }
  return found;
}
