;; hello.wat: a WASI (wasi_snapshot_preview1) "hello world" for Shoal's wasm engine.
;;
;; Prints "Hello from Shoal on WebAssembly!" followed by argv[1..] joined by spaces and a
;; newline, then exits 0 by returning from _start. The job's Parameters become argv[1..]
;; (argv[0] is the module's file name). Compiled and embedded into examples/hello-wasm.yaml
;; by examples/wasm/build.py.
;;
;; Memory layout:
;;   0     argc (i32), 4 argv buffer size (i32), 8 bytes written (i32)
;;   16    one iovec {ptr, len} for fd_write
;;   64    constant strings
;;   8192  argv pointer array, then the argv strings (memory grows if they do not fit)
(module
  (import "wasi_snapshot_preview1" "args_sizes_get"
    (func $args_sizes_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get"
    (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit"
    (func $proc_exit (param i32)))

  (memory (export "memory") 1)

  (data (i32.const 64) "Hello from Shoal on WebAssembly!") ;; 32 bytes
  (data (i32.const 96) " ")
  (data (i32.const 97) "\n")

  (global $ARGV i32 (i32.const 8192))

  ;; Length of the NUL-terminated string at $p.
  (func $strlen (param $p i32) (result i32)
    (local $q i32)
    (local.set $q (local.get $p))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (i32.load8_u (local.get $q))))
        (local.set $q (i32.add (local.get $q) (i32.const 1)))
        (br $next)))
    (i32.sub (local.get $q) (local.get $p)))

  ;; Write all $len bytes at $ptr to $fd, looping over short writes; exit 1 on an error.
  (func $write_all (param $fd i32) (param $ptr i32) (param $len i32)
    (block $done
      (loop $more
        (br_if $done (i32.eqz (local.get $len)))
        (i32.store (i32.const 16) (local.get $ptr))
        (i32.store (i32.const 20) (local.get $len))
        (if (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 8))
          (then (call $proc_exit (i32.const 1))))
        (local.set $ptr (i32.add (local.get $ptr) (i32.load (i32.const 8))))
        (local.set $len (i32.sub (local.get $len) (i32.load (i32.const 8))))
        (br $more))))

  (func (export "_start")
    (local $argc i32)
    (local $buf i32)
    (local $need i32)
    (local $have i32)
    (local $i i32)
    (local $arg i32)
    (if (call $args_sizes_get (i32.const 0) (i32.const 4))
      (then (call $proc_exit (i32.const 1))))
    (local.set $argc (i32.load (i32.const 0)))
    ;; The strings go right after the pointer array.
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

    (call $write_all (i32.const 1) (i32.const 64) (i32.const 32))
    (local.set $i (i32.const 1))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $argc)))
        (local.set $arg
          (i32.load (i32.add (global.get $ARGV) (i32.shl (local.get $i) (i32.const 2)))))
        (call $write_all (i32.const 1) (i32.const 96) (i32.const 1))
        (call $write_all (i32.const 1) (local.get $arg) (call $strlen (local.get $arg)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $write_all (i32.const 1) (i32.const 97) (i32.const 1))))
