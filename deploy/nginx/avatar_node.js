// Routes vendor calls that name their session in a JSON body rather than in the path
// (TWIN's /v1/stream-package/*, HeyGen's /v1/streaming.*) to the node that owns it: the
// node is the session id's part before its first dot (server/node_ids.py). Loaded by
// avatar-server.conf with js_import (Debian: libnginx-mod-http-js). Written for njs 0.7
// (Debian 12), which lacks for...of.

var ID_FIELDS = ["session_id", "sessionId", "streamId"];
var NODE_PREFIX = /^([a-z0-9]{1,16})\./;

function bodyNode(text) {
    var body;
    try {
        body = JSON.parse(text);
    } catch (e) {
        return "";
    }
    if (body === null || typeof body !== "object") {
        return "";
    }
    for (var i = 0; i < ID_FIELDS.length; i++) {
        var value = body[ID_FIELDS[i]];
        var match = typeof value === "string" ? NODE_PREFIX.exec(value) : null;
        if (match) {
            return match[1];
        }
    }
    return "";
}

// js_content: the body is read (and kept for proxy_pass) before this runs.
function route(r) {
    var node = bodyNode(r.requestText || "");
    if (node === "") {
        r.internalRedirect("@avatar_any_node");
    } else {
        r.internalRedirect("/_avatar_body/" + node + r.uri);
    }
}

export default { route };
