"""Independent check of an AWS SigV4 signature, with botocore.

Reads a JSON description of the request an upstream received on stdin, recomputes the
signature with botocore's SigV4Auth from the real key, and exits 0 only if it matches the
one in the Authorization header. For a chunk-signed streaming body it also checks every
chunk's signature, chained from the header's, with botocore's key derivation and HMAC over
the string to sign that AWS documents for STREAMING-AWS4-HMAC-SHA256-PAYLOAD. Prints why
otherwise.
"""
import hashlib
import json
import sys

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

d = json.load(sys.stdin)
hdrs = {k.lower(): v for k, v in d["headers"].items()}
auth = hdrs.get("authorization", "")
prefix = "AWS4-HMAC-SHA256 "
if not auth.startswith(prefix):
    sys.exit("not a SigV4 Authorization header")
fields = dict(p.strip().split("=", 1) for p in auth[len(prefix):].split(","))
key_id, date, region, service, term = fields["Credential"].split("/")
if key_id != d["access_key_id"]:
    sys.exit("signed with key id %s, want %s" % (key_id, d["access_key_id"]))
signed = fields["SignedHeaders"].split(";")
url = "https://" + d["host"] + d["path"] + ("?" + d["query"] if d["query"] else "")
req = AWSRequest(method=d["method"], url=url, data=d["body"].encode("latin-1"))
for h in signed:
    if h == "host":
        req.headers["host"] = d["host"]
    elif h in hdrs:
        req.headers[h] = hdrs[h]
    else:
        sys.exit("signed header %s is missing from the request" % h)
req.context["timestamp"] = hdrs["x-amz-date"]
if date != hdrs["x-amz-date"][:8]:
    sys.exit("scope date %s does not match X-Amz-Date" % date)
signer = SigV4Auth(Credentials(d["access_key_id"], d["secret_access_key"]), service, region)
canonical = signer.canonical_request(req)
want = signer.signature(signer.string_to_sign(req, canonical), req)
if want != fields["Signature"]:
    sys.exit("signature mismatch\ncanonical request:\n" + canonical)
chunks = 0
if hdrs.get("x-amz-content-sha256") == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD":
    body = d["body"].encode("latin-1")
    prev = want
    scope = "/".join([date, region, service, term])
    while True:
        head, sep, body = body.partition(b"\r\n")
        if not sep:
            sys.exit("chunk %d: no header line" % chunks)
        size_hex, _, sig = head.decode().partition(";chunk-signature=")
        size = int(size_hex, 16)
        data, trailer, body = body[:size], body[size:size + 2], body[size + 2:]
        if trailer != b"\r\n":
            sys.exit("chunk %d: not ended by CRLF" % chunks)
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", hdrs["x-amz-date"], scope, prev,
                         hashlib.sha256(b"").hexdigest(), hashlib.sha256(data).hexdigest()])
        expect = signer.signature(sts, req)
        if sig != expect:
            sys.exit("chunk %d: signature mismatch" % chunks)
        prev = sig
        chunks += 1
        if size == 0:
            break
    if body:
        sys.exit("bytes after the final chunk")
print("ok", service, region, "chunks", chunks)
