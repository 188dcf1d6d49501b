"""Uploads one file with tuspy, the tus project's Python client, as any client app would.

    upload.py ENDPOINT LENGTH [--resume UPLOAD_URL] [--chunk-size BYTES] [--retries N]
    upload.py --sha256 LENGTH

The file is LENGTH pseudo-random bytes, made as tuspy reads them, so that a gibibyte
takes no disk; the same LENGTH always gives the same bytes, so a resumed upload sends the
rest of the same file. Creates the upload at ENDPOINT (a post's `.../attachments/tus`), or
resumes the one at UPLOAD_URL from the offset the server reports, and prints the upload's
URL as soon as it is known, then `done OFFSET`. Any failure (a cut connection) exits 1.
With `--sha256`, prints the file's SHA-256 instead.
"""

import argparse
import hashlib
import io
import random
import sys

from tusclient import client

BLOCK = 1024 * 1024


class GeneratedFile(io.RawIOBase):
    """`length` pseudo-random bytes, each 1 MiB block seeded by its index."""

    def __init__(self, length: int):
        super().__init__()
        self.length = length
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def read(self, size: int = -1) -> bytes:
        end = self.length if size < 0 else min(self.length, self.position + size)
        pieces = []
        while self.position < end:
            block, within = divmod(self.position, BLOCK)
            take = min(BLOCK - within, end - self.position)
            pieces.append(random.Random(block).randbytes(BLOCK)[within : within + take])
            self.position += take
        return b"".join(pieces)

    def close(self) -> None:
        """tuspy closes the stream after each request; it is read again from any offset."""


def sha256(length: int) -> str:
    file, digest = GeneratedFile(length), hashlib.sha256()
    while chunk := file.read(64 * BLOCK):
        digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    if sys.argv[1:2] == ["--sha256"]:
        print(sha256(int(sys.argv[2])))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("length", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--chunk-size", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--retries", type=int, default=0)
    args = parser.parse_args()

    tus = client.TusClient(args.endpoint)
    uploader = tus.uploader(
        file_stream=GeneratedFile(args.length),
        url=args.resume,
        chunk_size=args.chunk_size,
        metadata={"filename": f"generated-{args.length}.bin"},
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
