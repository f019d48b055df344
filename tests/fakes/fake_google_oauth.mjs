// Preloaded into the REAL cgpu (NODE_OPTIONS=--import=<this file>): stands in for Google's OAuth token refresh.
// cgpu refreshes its stored login at every start with google-auth-library's OAuth2Client.refreshAccessToken;
// this replaces that one method, nothing in cgpu's source. The refresh is refused (as Google answers an
// expired or revoked login: HTTP 400 invalid_grant) while the file $CGPU_FAKE_OAUTH_REFUSE exists.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const entry = process.argv[1] ? fs.realpathSync(process.argv[1]) : "";
const require = createRequire(path.resolve(path.dirname(entry), "..", "..", "package.json"));
const { OAuth2Client } = require("google-auth-library");

OAuth2Client.prototype.refreshAccessToken = async function refreshAccessToken() {
  const refuse = process.env.CGPU_FAKE_OAUTH_REFUSE;
  if (refuse && fs.existsSync(refuse)) {
    const err = new Error("invalid_grant: Token has been expired or revoked.");
    err.response = { status: 400, data: { error: "invalid_grant" } };
    throw err;
  }
  const credentials = { access_token: "fake-access-token", expiry_date: Date.now() + 3600_000, token_type: "Bearer" };
  this.credentials = { ...this.credentials, ...credentials };
  return { credentials, res: null };
};
