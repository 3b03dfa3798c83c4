// A line protocol over stdin/stdout, so a Rust test can drive a real browser step by step:
//   goto URL                 -> ok
//   doc                      -> the page's current document (window.sseDocument()) as JSON
//   wait-doc JSON            -> ok once the page shows that document (any key order), else timeout
//   text SELECTOR            -> the element's text
//   eval JS                  -> JSON of the expression's value (awaited)
//   protocol URL             -> JSON of the protocol ("h2", "http/1.1") of URL's last response
//   screenshot PATH          -> ok
//   quit
import { chromium } from "playwright-core";
import readline from "node:readline";
import { createHash, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";

// TRUST_CERT names a PEM certificate whose key alone Chromium accepts without a CA: the TLS
// handshake still runs and checks the server holds that key, unlike ignoreHTTPSErrors.
const trust = process.env.TRUST_CERT
  ? [`--ignore-certificate-errors-spki-list=${createHash("sha256")
      .update(new X509Certificate(readFileSync(process.env.TRUST_CERT)).publicKey
        .export({ type: "spki", format: "der" }))
      .digest("base64")}`]
  : [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         ...trust],
});
const page = await browser.newPage({ viewport: { width: 900, height: 640 } });
// The page cannot see an open EventSource's protocol (Resource Timing reports a fetch once it
// ends), so it is read from the DevTools protocol as each response's headers arrive.
const protocols = new Map();
const cdp = await page.context().newCDPSession(page);
cdp.on("Network.responseReceived", ({ response }) => protocols.set(response.url, response.protocol));
await cdp.send("Network.enable");
const say = (s) => process.stdout.write(s + "\n");
say("ready");

const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
  const sp = line.indexOf(" ");
  const cmd = sp < 0 ? line : line.slice(0, sp);
  const arg = sp < 0 ? "" : line.slice(sp + 1);
  try {
    if (cmd === "goto") { await page.goto(arg); say("ok"); }
    else if (cmd === "doc") {
      await page.waitForFunction(() => window.sseDocument && window.sseDocument() !== null, null, { timeout: 10000 });
      // Serialised in the page: a document may hold a `__proto__` key, which only JSON carries.
      say(await page.evaluate(() => JSON.stringify(window.sseDocument())));
    } else if (cmd === "wait-doc") {
      // Compared in sorted-key form, and handed over as text for the same reason.
      await page.waitForFunction((want) => {
        const c = (v) => Array.isArray(v) ? `[${v.map(c)}]`
          : v && typeof v === "object" ? `{${Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + c(v[k]))}}`
          : JSON.stringify(v);
        return window.sseDocument && c(window.sseDocument()) === c(JSON.parse(want));
      }, arg, { timeout: 10000 });
      say("ok");
    } else if (cmd === "text") { say(JSON.stringify(await page.locator(arg).first().textContent({ timeout: 10000 }))); }
    else if (cmd === "eval") { say(JSON.stringify(await page.evaluate(arg))); }
    else if (cmd === "protocol") { say(JSON.stringify(protocols.get(arg) ?? null)); }
    else if (cmd === "screenshot") { await page.screenshot({ path: arg }); say("ok"); }
    else if (cmd === "quit") break;
    else say("error unknown command " + cmd);
  } catch (e) {
    say("error " + String(e.message || e).split("\n")[0]);
  }
}
await browser.close();
process.exit(0);
