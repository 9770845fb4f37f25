;; The chunker's inner loop (agents/repo/chunker.ts `scan`) in WebAssembly: the same Gear hash,
;; the same cuts, about twice as fast as V8's best for the JavaScript loop (no bounds check per
;; byte, the table load and the shift-add in registers).
;;
;; It reads the chunking ring in place: the module imports the ring's own memory (a shared
;; WebAssembly.Memory, agents/core/direct-io.ts), and the Gear table lives in that memory too,
;; 256 little-endian int32 values at `table`, written once by agents/repo/gear-scan.ts.
;;
;; Compiled by `npm run build:wasm` (wabt) into agents/repo/gear-scan-wasm.ts; a unit test
;; compiles this file again and fails if the two differ.
(module
  (import "ring" "memory" (memory 1 65536 shared))

  ;; scan(i, stop, mask, h, table, zeroHash): rolls h = (h << 1) + G[byte] over the bytes
  ;; [i, stop) and returns the position after the first byte where (h & mask) == 0, or -1.
  ;; Every 4 KiB, a hash equal to zeroHash (the hash's fixed point after 32 zero bytes) jumps over
  ;; the zero run that follows, which cannot cut and leaves the hash as it is.
  (func (export "scan")
    (param $i i32) (param $stop i32) (param $mask i32) (param $h i32)
    (param $table i32) (param $zeroHash i32)
    (result i32)
    (local $stop8 i32)
    (local $block i32)
    (local.set $stop8 (i32.sub (local.get $stop) (i32.const 7)))
    (block $blocks_done
      (loop $blocks
        (br_if $blocks_done (i32.ge_s (local.get $i) (local.get $stop8)))
        ;; block = min(stop8, i + 4096)
        (local.set $block (i32.add (local.get $i) (i32.const 4096)))
        (if (i32.lt_s (local.get $stop8) (local.get $block))
          (then (local.set $block (local.get $stop8))))
        ;; eight bytes a turn while i < block
        (loop $bytes
          (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
            (i32.load (i32.add (local.get $table)
              (i32.shl (i32.load8_u offset=0 (local.get $i)) (i32.const 2))))))
          (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
            (then (return (i32.add (local.get $i) (i32.const 1)))))
          (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
            (i32.load (i32.add (local.get $table)
              (i32.shl (i32.load8_u offset=1 (local.get $i)) (i32.const 2))))))
          (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
            (then (return (i32.add (local.get $i) (i32.const 2)))))
          (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
            (i32.load (i32.add (local.get $table)
              (i32.shl (i32.load8_u offset=2 (local.get $i)) (i32.const 2))))))
          (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
            (then (return (i32.add (local.get $i) (i32.const 3)))))
          (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
            (i32.load (i32.add (local.get $table)
              (i32.shl (i32.load8_u offset=3 (local.get $i)) (i32.const 2))))))
          (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
            (then (return (i32.add (local.get $i) (i32.const 4)))))
          (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
            (i32.load (i32.add (local.get $table)
              (i32.shl (i32.load8_u offset=4 (local.get $i)) (i32.const 2))))))
          (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
            (then (return (i32.add (local.get $i) (i32.const 5)))))
          (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
            (i32.load (i32.add (local.get $table)
              (i32.shl (i32.load8_u offset=5 (local.get $i)) (i32.const 2))))))
          (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
            (then (return (i32.add (local.get $i) (i32.const 6)))))
          (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
            (i32.load (i32.add (local.get $table)
              (i32.shl (i32.load8_u offset=6 (local.get $i)) (i32.const 2))))))
          (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
            (then (return (i32.add (local.get $i) (i32.const 7)))))
          (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
            (i32.load (i32.add (local.get $table)
              (i32.shl (i32.load8_u offset=7 (local.get $i)) (i32.const 2))))))
          (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
            (then (return (i32.add (local.get $i) (i32.const 8)))))
          (local.set $i (i32.add (local.get $i) (i32.const 8)))
          (br_if $bytes (i32.lt_s (local.get $i) (local.get $block))))
        (if (i32.eq (local.get $h) (local.get $zeroHash))
          (then (local.set $i (call $zeroRunEnd (local.get $i) (local.get $stop)))))
        (br $blocks)))
    ;; the last bytes, one at a time
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_s (local.get $i) (local.get $stop)))
        (local.set $h (i32.add (i32.shl (local.get $h) (i32.const 1))
          (i32.load (i32.add (local.get $table)
            (i32.shl (i32.load8_u (local.get $i)) (i32.const 2))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (if (i32.eqz (i32.and (local.get $h) (local.get $mask)))
          (then (return (local.get $i))))
        (br $tail)))
    (i32.const -1))

  ;; The first position in [i, stop) whose byte is not 0, or stop: bytes up to an 8-byte
  ;; boundary, then 8 bytes a turn, then the last bytes.
  (func $zeroRunEnd (param $i i32) (param $stop i32) (result i32)
    (block $head_done
      (loop $head
        (br_if $head_done (i32.ge_s (local.get $i) (local.get $stop)))
        (br_if $head_done (i32.eqz (i32.and (local.get $i) (i32.const 7))))
        (br_if $head_done (i32.load8_u (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $head)))
    (block $words_done
      (loop $words
        (br_if $words_done (i32.gt_s (i32.add (local.get $i) (i32.const 8)) (local.get $stop)))
        (br_if $words_done (i64.ne (i64.load (local.get $i)) (i64.const 0)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $words)))
    (block $end
      (loop $last
        (br_if $end (i32.ge_s (local.get $i) (local.get $stop)))
        (br_if $end (i32.load8_u (local.get $i)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $last)))
    (local.get $i)))
