// A plain Node.js http server with no OpenTelemetry in it: what odiglet traces with eBPF.
//
// Usage: node http_app.js PORT (0: any; the port is printed as `listening PORT`).
// GET /hello answers 200, GET /fail 500, anything else 404.
const http = require('http');

const server = http.createServer((request, response) => {
  const path = request.url.split('?')[0];
  const [status, body] = { '/hello': [200, 'hello\n'], '/fail': [500, 'failed\n'] }[path] || [404, 'not found\n'];
  response.writeHead(status, { 'Content-Length': Buffer.byteLength(body) });
  response.end(body);
});
server.listen(Number(process.argv[2]), '127.0.0.1', () => {
  console.log('listening', server.address().port);
});
