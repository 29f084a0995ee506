;; Fletcher-4 (ZFS's fletcher_4) with WebAssembly SIMD: four 64-bit sums
;; over the data's little-endian 32-bit words,
;;
;;   for each word w:  a += w; b += a; c += b; d += c      (all mod 2^64)
;;
;; computed four words at a time in four interleaved lanes, which finish()
;; folds back into the serial sums. fletcher4.ts drives it; this file is
;; its source, assembled by scripts/build-wasm.mjs into fletcher4-wasm.ts
;; (a test checks the two agree).
;;
;; Memory (two 64 KiB pages, never grown):
;;   [0, 128)        lane sums: a (lanes 0-1, 2-3), b, c, d, as i64x2 pairs
;;   [128, 160)      finish()'s result: a, b, c, d as u64, little-endian
;;   [65536, 131072) scratch: the caller copies the data here, 64 KiB at most
(module
  (memory (export "memory") 2 2)

  ;; Zeroes the lane sums: the start of a new checksum.
  (func (export "reset")
    (v128.store offset=0 (i32.const 0) (v128.const i64x2 0 0))
    (v128.store offset=16 (i32.const 0) (v128.const i64x2 0 0))
    (v128.store offset=32 (i32.const 0) (v128.const i64x2 0 0))
    (v128.store offset=48 (i32.const 0) (v128.const i64x2 0 0))
    (v128.store offset=64 (i32.const 0) (v128.const i64x2 0 0))
    (v128.store offset=80 (i32.const 0) (v128.const i64x2 0 0))
    (v128.store offset=96 (i32.const 0) (v128.const i64x2 0 0))
    (v128.store offset=112 (i32.const 0) (v128.const i64x2 0 0)))

  ;; Adds the first $len bytes of scratch ($len a multiple of 16) to the
  ;; lane sums: word 4j + l goes to lane l.
  (func (export "update") (param $len i32)
    (local $p i32) (local $end i32) (local $v v128)
    (local $a01 v128) (local $a23 v128) (local $b01 v128) (local $b23 v128)
    (local $c01 v128) (local $c23 v128) (local $d01 v128) (local $d23 v128)
    (local.set $a01 (v128.load offset=0 (i32.const 0)))
    (local.set $a23 (v128.load offset=16 (i32.const 0)))
    (local.set $b01 (v128.load offset=32 (i32.const 0)))
    (local.set $b23 (v128.load offset=48 (i32.const 0)))
    (local.set $c01 (v128.load offset=64 (i32.const 0)))
    (local.set $c23 (v128.load offset=80 (i32.const 0)))
    (local.set $d01 (v128.load offset=96 (i32.const 0)))
    (local.set $d23 (v128.load offset=112 (i32.const 0)))
    (local.set $p (i32.const 65536))
    (local.set $end (i32.add (i32.const 65536) (local.get $len)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $v (v128.load (local.get $p)))
        (local.set $a01 (i64x2.add (local.get $a01) (i64x2.extend_low_i32x4_u (local.get $v))))
        (local.set $a23 (i64x2.add (local.get $a23) (i64x2.extend_high_i32x4_u (local.get $v))))
        (local.set $b01 (i64x2.add (local.get $b01) (local.get $a01)))
        (local.set $b23 (i64x2.add (local.get $b23) (local.get $a23)))
        (local.set $c01 (i64x2.add (local.get $c01) (local.get $b01)))
        (local.set $c23 (i64x2.add (local.get $c23) (local.get $b23)))
        (local.set $d01 (i64x2.add (local.get $d01) (local.get $c01)))
        (local.set $d23 (i64x2.add (local.get $d23) (local.get $c23)))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $next)))
    (v128.store offset=0 (i32.const 0) (local.get $a01))
    (v128.store offset=16 (i32.const 0) (local.get $a23))
    (v128.store offset=32 (i32.const 0) (local.get $b01))
    (v128.store offset=48 (i32.const 0) (local.get $b23))
    (v128.store offset=64 (i32.const 0) (local.get $c01))
    (v128.store offset=80 (i32.const 0) (local.get $c23))
    (v128.store offset=96 (i32.const 0) (local.get $d01))
    (v128.store offset=112 (i32.const 0) (local.get $d23)))

  ;; Folds the lane sums into the serial ones, adds the first $words words
  ;; of scratch (0-3: the data's last, when its length is not a multiple of
  ;; 16) one at a time, and stores a, b, c, d at 128.
  ;;
  ;; In lane l, the word k-th from the lane's end weighs 1, k, T(k), Te(k)
  ;; in a, b, c, d (T and Te the triangular and tetrahedral numbers); in the
  ;; serial sums it is (4k - l)-th from the end and weighs 1, 4k - l,
  ;; T(4k - l), Te(4k - l). Written in the lane weights (integer
  ;; coefficients, so exact mod 2^64):
  ;;   a = sum a_l
  ;;   b = 4 sum b_l - (a_1 + 2 a_2 + 3 a_3)
  ;;   c = 16 sum c_l - (6 b_0 + 10 b_1 + 14 b_2 + 18 b_3) + a_2 + 3 a_3
  ;;   d = 64 sum d_l - (48 c_0 + 64 c_1 + 80 c_2 + 96 c_3)
  ;;       + 4 b_0 + 10 b_1 + 20 b_2 + 34 b_3 - a_3
  (func (export "finish") (param $words i32)
    (local $a0 i64) (local $a1 i64) (local $a2 i64) (local $a3 i64)
    (local $b0 i64) (local $b1 i64) (local $b2 i64) (local $b3 i64)
    (local $c0 i64) (local $c1 i64) (local $c2 i64) (local $c3 i64)
    (local $d0 i64) (local $d1 i64) (local $d2 i64) (local $d3 i64)
    (local $a i64) (local $b i64) (local $c i64) (local $d i64)
    (local $p i32) (local $end i32)
    (local.set $a0 (i64.load offset=0 (i32.const 0)))
    (local.set $a1 (i64.load offset=8 (i32.const 0)))
    (local.set $a2 (i64.load offset=16 (i32.const 0)))
    (local.set $a3 (i64.load offset=24 (i32.const 0)))
    (local.set $b0 (i64.load offset=32 (i32.const 0)))
    (local.set $b1 (i64.load offset=40 (i32.const 0)))
    (local.set $b2 (i64.load offset=48 (i32.const 0)))
    (local.set $b3 (i64.load offset=56 (i32.const 0)))
    (local.set $c0 (i64.load offset=64 (i32.const 0)))
    (local.set $c1 (i64.load offset=72 (i32.const 0)))
    (local.set $c2 (i64.load offset=80 (i32.const 0)))
    (local.set $c3 (i64.load offset=88 (i32.const 0)))
    (local.set $d0 (i64.load offset=96 (i32.const 0)))
    (local.set $d1 (i64.load offset=104 (i32.const 0)))
    (local.set $d2 (i64.load offset=112 (i32.const 0)))
    (local.set $d3 (i64.load offset=120 (i32.const 0)))
    (local.set $a
      (i64.add (i64.add (local.get $a0) (local.get $a1)) (i64.add (local.get $a2) (local.get $a3))))
    (local.set $b
      (i64.sub
        (i64.mul (i64.const 4)
          (i64.add (i64.add (local.get $b0) (local.get $b1)) (i64.add (local.get $b2) (local.get $b3))))
        (i64.add (local.get $a1)
          (i64.add (i64.mul (i64.const 2) (local.get $a2)) (i64.mul (i64.const 3) (local.get $a3))))))
    (local.set $c
      (i64.add
        (i64.sub
          (i64.mul (i64.const 16)
            (i64.add (i64.add (local.get $c0) (local.get $c1)) (i64.add (local.get $c2) (local.get $c3))))
          (i64.add
            (i64.add (i64.mul (i64.const 6) (local.get $b0)) (i64.mul (i64.const 10) (local.get $b1)))
            (i64.add (i64.mul (i64.const 14) (local.get $b2)) (i64.mul (i64.const 18) (local.get $b3)))))
        (i64.add (local.get $a2) (i64.mul (i64.const 3) (local.get $a3)))))
    (local.set $d
      (i64.sub
        (i64.add
          (i64.sub
            (i64.mul (i64.const 64)
              (i64.add (i64.add (local.get $d0) (local.get $d1)) (i64.add (local.get $d2) (local.get $d3))))
            (i64.add
              (i64.add (i64.mul (i64.const 48) (local.get $c0)) (i64.mul (i64.const 64) (local.get $c1)))
              (i64.add (i64.mul (i64.const 80) (local.get $c2)) (i64.mul (i64.const 96) (local.get $c3)))))
          (i64.add
            (i64.add (i64.mul (i64.const 4) (local.get $b0)) (i64.mul (i64.const 10) (local.get $b1)))
            (i64.add (i64.mul (i64.const 20) (local.get $b2)) (i64.mul (i64.const 34) (local.get $b3)))))
        (local.get $a3)))
    (local.set $p (i32.const 65536))
    (local.set $end (i32.add (i32.const 65536) (i32.shl (local.get $words) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $a (i64.add (local.get $a) (i64.load32_u (local.get $p))))
        (local.set $b (i64.add (local.get $b) (local.get $a)))
        (local.set $c (i64.add (local.get $c) (local.get $b)))
        (local.set $d (i64.add (local.get $d) (local.get $c)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next)))
    (i64.store offset=128 (i32.const 0) (local.get $a))
    (i64.store offset=136 (i32.const 0) (local.get $b))
    (i64.store offset=144 (i32.const 0) (local.get $c))
    (i64.store offset=152 (i32.const 0) (local.get $d)))
)
