file(REMOVE_RECURSE
  "libkohaku_core.a"
)
