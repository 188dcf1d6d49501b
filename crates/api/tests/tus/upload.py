"""Uploads one file with tuspy, the tus project's Python client, as any client app would.

    upload.py ENDPOINT FILE [--resume UPLOAD_URL] [--chunk-size BYTES] [--retries N]

Creates the upload at ENDPOINT (a post's `.../attachments/tus`), or resumes the one at
UPLOAD_URL from the offset the server reports, and prints the upload's URL as soon as it
is known, then `done OFFSET`. Any failure (a cut connection) exits 1.
"""

import argparse
import os
import sys

from tusclient import client


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("file")
    parser.add_argument("--resume")
    parser.add_argument("--chunk-size", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--retries", type=int, default=0)
    args = parser.parse_args()

    tus = client.TusClient(args.endpoint)
    uploader = tus.uploader(
        args.file,
        url=args.resume,
        chunk_size=args.chunk_size,
        metadata={"filename": os.path.basename(args.file)},
        retries=args.retries,
        retry_delay=1,
    )
    if not uploader.url:
        uploader.set_url(uploader.create_url())
    print(uploader.url, flush=True)
    try:
        uploader.upload()
    except Exception as error:  # a cut connection, a refusal: report and fail
        print(f"upload failed at offset {uploader.offset}: {error}", file=sys.stderr)
        return 1
    print(f"done {uploader.offset}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
