// The peer of deploybot's webhook intake in bench/: the standard way to write
// a GitHub App. Probot verifies X-Hub-Signature-256 and decodes the event;
// this app finds the /deploy command lines of a comment (outside code
// fences) and splits their arguments. It stores nothing and calls no GitHub
// API: Probot answers 200 once the handler is done.
const COMMAND = /^\/deploy(?:\s+(.*))?$/;

module.exports = (app) => {
  app.on("issue_comment", async (context) => {
    const body = (context.payload.comment && context.payload.comment.body) || "";
    const commands = [];
    let fenced = false;
    for (const raw of body.split(/\r?\n/)) {
      const line = raw.trim();
      if (line.startsWith("```")) {
        fenced = !fenced;
        continue;
      }
      if (fenced) continue;
      const match = COMMAND.exec(line);
      if (match) commands.push((match[1] || "").split(/\s+/).filter(Boolean));
    }
    context.log.debug({ commands }, "parsed");
  });
};
