/** A JSON value as the gateway sends it; a text body is a string document. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type Format = "snapshot" | "json-patch" | "merge-patch";

export interface Operation {
  op: "add" | "remove" | "replace" | "move" | "copy" | "test";
  path: string;
  from?: string;
  value?: Json;
}

export interface LiveDocumentOptions {
  /** Send cookies to another origin (the stream's `cors.credentials` must allow it). */
  withCredentials?: boolean;
  /** `?format=`: how changes arrive. The stream's `diff` mode when left out. */
  format?: Format;
  /** The EventSource to use: globalThis.EventSource by default; pass one in Node or tests. */
  EventSource?: new (url: string, init?: { withCredentials?: boolean }) => EventSource;
}

export interface ChangeDetail<T = Json> {
  /** The whole document after the event: a new object, sharing what did not change. */
  document: T;
  /** The document before it (undefined on the first); never modified. */
  previous: T | undefined;
  event: "snapshot" | "patch" | "merge-patch";
  /** `<epoch>-<seq>-<hash>`: its hash is what `document` was checked against. */
  id: string;
  /** The RFC 6902 array or RFC 7396 object applied; undefined for a snapshot. */
  operations?: Operation[] | { [key: string]: Json };
}

export type State =
  | "connecting"
  | "connected"
  | "reconnecting"
  | "upstream-failing"
  | "upstream-healthy"
  | "upstream-stale"
  | "ended"
  | "overloaded"
  | "resync";

export interface StatusDetail {
  state: State;
  /** `upstream-*`: the upstream's HTTP status, if it answered. */
  status?: number;
  /** `upstream-*`: what went wrong. `resync`: why the document was fetched again. */
  error?: string | Error;
  /** `upstream-*`: since when (RFC 3339). */
  since?: string;
  /** `ended`, `overloaded`, `reconnecting` after an `end`: the gateway's reason. */
  reason?: string;
  reconnect?: boolean;
}

export interface LiveDocumentEventMap<T> {
  change: CustomEvent<ChangeDetail<T>>;
  status: CustomEvent<StatusDetail>;
}

export class LiveDocument<T = Json> extends EventTarget {
  constructor(url: string | URL, options?: LiveDocumentOptions);
  readonly url: string | URL;
  /** The current, verified document; undefined until the first snapshot. */
  readonly document: T | undefined;
  /** Resolves with the first document; rejects if the stream ends or is closed before it. */
  readonly ready: Promise<T>;
  /** The id of the last event applied. */
  readonly lastEventId: string;
  /** How often the document was fetched again because an event did not verify or apply. */
  readonly resyncs: number;
  /** The last status state. */
  readonly state: State | "connecting";
  /** True after close() or an `end` without `reconnect`. */
  readonly closed: boolean;
  /** Stops for good and closes the connection. */
  close(): void;
  addEventListener<K extends keyof LiveDocumentEventMap<T>>(
    type: K,
    listener: (this: LiveDocument<T>, ev: LiveDocumentEventMap<T>[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof LiveDocumentEventMap<T>>(
    type: K,
    listener: (this: LiveDocument<T>, ev: LiveDocumentEventMap<T>[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

/** RFC 6902; returns a new document, never modifies `doc`; throws when an operation fails. */
export function applyPatch<T = Json>(doc: Json, patch: Operation[]): T;
/** RFC 7396; returns a new document, never modifies `doc`. */
export function mergePatch<T = Json>(doc: Json, patch: Json): T;
/** RFC 8785 (JCS) canonical form. */
export function canonicalize(value: Json): string;
/** SHA-256 as 64 hex digits (the fallback used without crypto.subtle). */
export function sha256(bytes: Uint8Array): string;
/** The 16 hex digits an event id ends with, for a document's canonical form or a text body. */
export function checksum(text: string): Promise<string>;
/** Deep equality of JSON values (RFC 6902 `test`). */
export function equal(a: Json, b: Json): boolean;
