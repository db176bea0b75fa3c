;; fail.wat: a WASI module that always fails, for trying out retries and failed jobs.
;;
;; Prints "something went wrong" to stderr (fd 2) and exits with code 3 via proc_exit.
;; Compiled and embedded into examples/failing-job.yaml by examples/wasm/build.py.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  ;; 0: iovec {ptr, len}; 8: bytes written
  (data (i32.const 64) "something went wrong\n") ;; 21 bytes

  (func (export "_start")
    (local $ptr i32)
    (local $len i32)
    (local.set $ptr (i32.const 64))
    (local.set $len (i32.const 21))
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 0) (local.get $ptr))
        (i32.store (i32.const 4) (local.get $len))
        (br_if $done (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 8)))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
        (br $more)))
    (call $proc_exit (i32.const 3))))
