;; cat.wat: a WASI (wasi_snapshot_preview1) module printing the file whose path is argv[1].
;;
;; Meant to run against an input source: Shoal preopens every directory input source at its
;; Target, so `cat.wasm /inputs/data.txt` finds the preopened directory holding the path
;; (the longest matching one, scanning fds from 3 with fd_prestat_get), opens the rest of the
;; path with path_open relative to it, and copies it to stdout with fd_read/fd_write.
;; Exits 2 without an argument, 1 when the file cannot be found, opened or read.
;;
;; Memory layout:
;;   0     argc, 4 argv buffer size, 8 bytes written, 12 bytes read,
;;   16    prestat (8 bytes), 24 opened fd, 32 one iovec {ptr, len}
;;   64    constant strings
;;   1024  a preopened directory's name (up to 1024 bytes)
;;   4096  read buffer (4096 bytes)
;;   8192  argv pointer array, then the argv strings (memory grows if they do not fit)
(module
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_get"
    (func $fd_prestat_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_prestat_dir_name"
    (func $fd_prestat_dir_name (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_close"
    (func $fd_close (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  (data (i32.const 64) "cat: ")                                   ;; 5
  (data (i32.const 70) ": ")                                      ;; 2
  (data (i32.const 72) "\n")                                      ;; 1
  (data (i32.const 80) "usage: cat.wasm PATH")                    ;; 20
  (data (i32.const 112) "no preopened directory holds this path") ;; 38
  (data (i32.const 160) "cannot open")                            ;; 11
  (data (i32.const 176) "cannot read")                            ;; 11
  (data (i32.const 192) ".")                                      ;; 1

  (global $ARGV i32 (i32.const 8192))
  (global $NAME i32 (i32.const 1024))
  (global $NAME_MAX i32 (i32.const 1024))
  (global $BUF i32 (i32.const 4096))
  (global $BUF_LEN i32 (i32.const 4096))
  (global $path (mut i32) (i32.const 0))
  (global $plen (mut i32) (i32.const 0))

  (func $strlen (param $p i32) (result i32)
    (local $q i32)
    (local.set $q (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $q))))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (br $next)))
    (i32.sub (local.get $q) (local.get $p)))

  ;; Whether the $n bytes at $a and $b are equal.
  (func $same (param $a i32) (param $b i32) (param $n i32) (result i32)
    (block $differ
      (loop $next
        (if (i32.eqz (local.get $n)) (then (return (i32.const 1))))
        (br_if $differ
          (i32.ne (i32.load8_u (local.get $a)) (i32.load8_u (local.get $b))))
        (local.set $a (i32.add (local.get $a) (i32.const 1)))
        (local.set $b (i32.add (local.get $b) (i32.const 1)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.const 0))

  ;; Write all $len bytes at $ptr to $fd; returns a WASI errno (0 on success).
  (func $write_all (param $fd i32) (param $ptr i32) (param $len i32) (result i32)
    (local $err i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 32) (local.get $ptr))
        (i32.store (i32.const 36) (local.get $len))
        (local.set $err
          (call $fd_write (local.get $fd) (i32.const 32) (i32.const 1) (i32.const 8)))
        (if (local.get $err) (then (return (local.get $err))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
        (br $more)))
    (i32.const 0))

  ;; Print "cat: [PATH: ]MESSAGE\n" to stderr and exit with $code.
  (func $fail (param $msg i32) (param $len i32) (param $code i32)
    (drop (call $write_all (i32.const 2) (i32.const 64) (i32.const 5)))
    (if (global.get $plen)
      (then
        (drop (call $write_all (i32.const 2) (global.get $path) (global.get $plen)))
        (drop (call $write_all (i32.const 2) (i32.const 70) (i32.const 2)))))
    (drop (call $write_all (i32.const 2) (local.get $msg) (local.get $len)))
    (drop (call $write_all (i32.const 2) (i32.const 72) (i32.const 1)))
    (call $proc_exit (local.get $code))
    (unreachable))

  ;; Load argv into memory and set $path/$plen to argv[1] (exit 2 without one).
  (func $load_path
    (local $argc i32)
    (local $buf i32)
    (local $need i32)
    (local $have i32)
    (if (call $args_sizes_get (i32.const 0) (i32.const 4))
      (then (call $proc_exit (i32.const 1))))
    (local.set $argc (i32.load (i32.const 0)))
    (if (i32.lt_u (local.get $argc) (i32.const 2))
      (then (call $fail (i32.const 80) (i32.const 20) (i32.const 2))))
    (local.set $buf (i32.add (global.get $ARGV) (i32.shl (local.get $argc) (i32.const 2))))
    (local.set $need (i32.add (local.get $buf) (i32.load (i32.const 4))))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (local.get $have))
      (then
        (if (i32.lt_s
              (memory.grow
                (i32.shr_u
                  (i32.add (i32.sub (local.get $need) (local.get $have)) (i32.const 65535))
                  (i32.const 16)))
              (i32.const 0))
          (then (call $proc_exit (i32.const 1))))))
    (if (call $args_get (global.get $ARGV) (local.get $buf))
      (then (call $proc_exit (i32.const 1))))
    (global.set $path (i32.load (i32.add (global.get $ARGV) (i32.const 4))))
    (global.set $plen (call $strlen (global.get $path)))
    (if (i32.eqz (global.get $plen))
      (then (call $fail (i32.const 80) (i32.const 20) (i32.const 2)))))

  ;; How many leading bytes of $path the preopened directory $fd covers, or -1 if it does not
  ;; hold $path. "/" covers every absolute path (0 bytes); "." every relative one.
  (func $covers (param $fd i32) (result i32)
    (local $n i32)
    (local.set $n (i32.load (i32.const 20)))
    (if (i32.gt_u (local.get $n) (global.get $NAME_MAX)) (then (return (i32.const -1))))
    (if (call $fd_prestat_dir_name (local.get $fd) (global.get $NAME) (local.get $n))
      (then (return (i32.const -1))))
    ;; Some runtimes count a trailing NUL in the name's length.
    (if (i32.and
          (i32.gt_u (local.get $n) (i32.const 0))
          (i32.eqz (i32.load8_u
            (i32.add (global.get $NAME) (i32.sub (local.get $n) (i32.const 1))))))
      (then (local.set $n (i32.sub (local.get $n) (i32.const 1)))))
    ;; "." (or "./"): the working directory, for relative paths.
    (if (i32.and
          (i32.ge_u (local.get $n) (i32.const 1))
          (i32.and
            (i32.eq (i32.load8_u (global.get $NAME)) (i32.const 46))
            (i32.or
              (i32.eq (local.get $n) (i32.const 1))
              (i32.and
                (i32.eq (local.get $n) (i32.const 2))
                (i32.eq (i32.load8_u (i32.add (global.get $NAME) (i32.const 1)))
                        (i32.const 47))))))
      (then
        (return
          (select (i32.const -1) (i32.const 0)
            (i32.eq (i32.load8_u (global.get $path)) (i32.const 47))))))
    ;; Drop trailing slashes so "/" becomes "" and "/data/" becomes "/data".
    (block $trimmed
      (loop $trim
        (br_if $trimmed (i32.eqz (local.get $n)))
        (br_if $trimmed
          (i32.ne (i32.load8_u (i32.add (global.get $NAME) (i32.sub (local.get $n) (i32.const 1))))
                  (i32.const 47)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $trim)))
    (if (i32.eqz (local.get $n))
      (then
        (return
          (select (i32.const 0) (i32.const -1)
            (i32.eq (i32.load8_u (global.get $path)) (i32.const 47))))))
    (if (i32.gt_u (local.get $n) (global.get $plen)) (then (return (i32.const -1))))
    (if (i32.eqz (call $same (global.get $NAME) (global.get $path) (local.get $n)))
      (then (return (i32.const -1))))
    ;; "/data" holds "/data" and "/data/x", not "/database".
    (if (i32.eq (local.get $n) (global.get $plen)) (then (return (local.get $n))))
    (if (i32.eq (i32.load8_u (i32.add (global.get $path) (local.get $n))) (i32.const 47))
      (then (return (local.get $n))))
    (i32.const -1))

  (func (export "_start")
    (local $fd i32)
    (local $got i32)
    (local $best_fd i32)
    (local $best_n i32)
    (local $rel i32)
    (local $rlen i32)
    (local $file i32)
    (local $nread i32)
    (call $load_path)

    ;; Find the preopened directory with the longest prefix of the path.
    (local.set $best_fd (i32.const -1))
    (local.set $best_n (i32.const -1))
    (local.set $fd (i32.const 3))
    (block $scanned
      (loop $scan
        (br_if $scanned (call $fd_prestat_get (local.get $fd) (i32.const 16)))
        (if (i32.eqz (i32.load8_u (i32.const 16)))  ;; tag 0: a directory
          (then
            (local.set $got (call $covers (local.get $fd)))
            (if (i32.gt_s (local.get $got) (local.get $best_n))
              (then
                (local.set $best_n (local.get $got))
                (local.set $best_fd (local.get $fd))))))
        (local.set $fd (i32.add (local.get $fd) (i32.const 1)))
        (br $scan)))
    (if (i32.lt_s (local.get $best_fd) (i32.const 0))
      (then (call $fail (i32.const 112) (i32.const 38) (i32.const 1))))

    ;; The rest of the path, without leading slashes; "." if nothing is left.
    (local.set $rel (i32.add (global.get $path) (local.get $best_n)))
    (local.set $rlen (i32.sub (global.get $plen) (local.get $best_n)))
    (block $stripped
      (loop $strip
        (br_if $stripped (i32.eqz (local.get $rlen)))
        (br_if $stripped (i32.ne (i32.load8_u (local.get $rel)) (i32.const 47)))
        (local.set $rel (i32.add (local.get $rel) (i32.const 1)))
        (local.set $rlen (i32.sub (local.get $rlen) (i32.const 1)))
        (br $strip)))
    (if (i32.eqz (local.get $rlen))
      (then
        (local.set $rel (i32.const 192))
        (local.set $rlen (i32.const 1))))

    ;; dirflags 1: follow symlinks; rights: fd_read (1 << 1).
    (if (call $path_open (local.get $best_fd) (i32.const 1) (local.get $rel) (local.get $rlen)
          (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 24))
      (then (call $fail (i32.const 160) (i32.const 11) (i32.const 1))))
    (local.set $file (i32.load (i32.const 24)))

    (block $eof
      (loop $copy
        (i32.store (i32.const 32) (global.get $BUF))
        (i32.store (i32.const 36) (global.get $BUF_LEN))
        (if (call $fd_read (local.get $file) (i32.const 32) (i32.const 1) (i32.const 12))
          (then (call $fail (i32.const 176) (i32.const 11) (i32.const 1))))
        (local.set $nread (i32.load (i32.const 12)))
        (br_if $eof (i32.eqz (local.get $nread)))
        (if (call $write_all (i32.const 1) (global.get $BUF) (local.get $nread))
          (then (call $proc_exit (i32.const 1))))
        (br $copy)))
    (drop (call $fd_close (local.get $file)))))
