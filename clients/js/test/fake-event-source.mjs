// An EventSource that a test drives by hand: it opens, delivers events and fails when told.
export class FakeEventSource extends EventTarget {
  static made = [];
  static last() {
    return FakeEventSource.made.at(-1);
  }

  constructor(url, options) {
    super();
    this.url = new URL(url);
    this.withCredentials = Boolean(options?.withCredentials);
    this.readyState = 0;
    FakeEventSource.made.push(this);
  }

  close() {
    this.readyState = 2;
  }

  open() {
    this.readyState = 1;
    this.dispatchEvent(new Event("open"));
  }

  emit(type, data, lastEventId = "") {
    const text = typeof data === "string" ? data : JSON.stringify(data);
    this.dispatchEvent(new MessageEvent(type, { data: text, lastEventId }));
  }

  /** A dropped connection: CONNECTING when the browser will retry, CLOSED when it gave up. */
  fail(readyState) {
    this.readyState = readyState;
    this.dispatchEvent(new Event("error"));
  }
}
