#!/bin/sh
# Every C test program again, built with clang under AddressSanitizer and
# UndefinedBehaviorSanitizer (make sanitize).  Its summary line is the last.
exec make --no-print-directory sanitize
