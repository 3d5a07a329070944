// Answers every request with the native addon's greeting.
const http = require("http");
const { greeting } = require("./build/Release/greeting.node");

const port = process.env.PORT || 3000;
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end(greeting());
  })
  .listen(port, "0.0.0.0", () => console.log(`listening on ${port}`));
