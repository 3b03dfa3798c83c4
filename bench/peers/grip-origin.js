// Minimal GRIP origin for Pushpin: GET /sub -> 200 text/event-stream with Grip-Hold: stream on
// channel "bench" (body ":\n\n", an SSE comment), so Pushpin holds every client open on that channel.
// usage: node grip-origin.js PORT   (bench/peers/pushpin.sh starts it)
const http = require('http');
const port = parseInt(process.argv[2] || '18100', 10);
const HOLD = {
  'Content-Type': 'text/event-stream',
  'Grip-Hold': 'stream',
  'Grip-Channel': 'bench',
  'Content-Length': '3',
};
const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url.split('?')[0] === '/sub') {
    res.writeHead(200, HOLD);
    res.end(':\n\n');
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': '10' });
    res.end('not found\n');
  }
});
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', 4096, () => console.log(`origin listening on 127.0.0.1:${port}`));
