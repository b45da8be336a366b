// Verifies Standard Webhooks deliveries with the npm `standardwebhooks` package (not jobcast's code).
// stdin: {"secret": "whsec_...", "deliveries": [{"headers": {...}, "body": "..."}]}
// stdout: one JSON line per delivery, the verified payload, or {"error": "..."}.
const { Webhook } = require("standardwebhooks");

let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const { secret, deliveries } = JSON.parse(input);
  const wh = new Webhook(secret);
  for (const { headers, body } of deliveries) {
    try {
      console.log(JSON.stringify(wh.verify(body, headers)));
    } catch (err) {
      console.log(JSON.stringify({ error: String(err) }));
    }
  }
});
