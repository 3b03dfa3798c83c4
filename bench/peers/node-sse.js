// The baseline: a minimal Node.js SSE server of the kind the tutorials show.
//   GET  /sub  -> an event stream
//   POST /pub  -> the body goes to every subscriber with res.write
const http = require("http");
const port = Number(process.argv[2] || 8090);
const clients = new Set();
http
  .createServer((req, res) => {
    if (req.method === "GET" && req.url === "/sub") {
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
      res.write(":\n\n");
      clients.add(res);
      req.on("close", () => clients.delete(res));
    } else if (req.method === "POST" && req.url === "/pub") {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const msg = `data: ${body}\n\n`;
        for (const c of clients) c.write(msg);
        res.end("ok\n");
      });
    } else {
      res.writeHead(404).end();
    }
  })
  .listen(port, "127.0.0.1");
