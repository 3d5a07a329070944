const express = require("express");
const port = process.env.PORT || 3000;
const app = express();
app.get("/", (req, res) => res.type("text/plain").send("Hello from node-npm\n"));
app.listen(port, () => console.log(`listening on ${port}`));
