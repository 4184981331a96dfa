//! Element-wise maths for the CPU kernels: an exponential and an exact-GELU
//! written without branches or libm calls, so loops over them become SIMD
//! code. Profiling showed libm's scalar `erff`/`expf` taking about a tenth of
//! a forward pass.

/// `eˣ` to within 2 ulp (Cephes' `expf` polynomial), written with no branch
/// and no libm call so that a loop over it becomes SIMD code. Inputs below
/// −87.3 give ≈1e-38 instead of a subnormal: a masked key's weight.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to an integer in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let two_n = f32::from_bits(
        (shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32)
            .wrapping_add(127)
            .wrapping_shl(23) as u32,
    );
    er * two_n
}

/// `erf(x)` to within 1.5e-7 (Abramowitz & Stegun 7.1.26).
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// GELU as BERT defines it, `x·Φ(x) = x/2·(1 + erf(x/√2))`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Defines a kernel compiled three times, for AVX-512, for AVX2 with FMA and
/// for the x86-64 baseline, and picks the widest this CPU has at run time.
/// The release build targets every x86-64 CPU, whose baseline is 4-wide
/// SSE2; profiling showed soft-max and GELU at a tenth of a batch until they
/// ran on the wide units. The body should call `#[inline(always)]` code so
/// that all of it is compiled inside each variant.
macro_rules! simd_kernel {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use simd_kernel;

simd_kernel! {
    /// Exact GELU on every value, in place: the epilogue of the feed-forward
    /// layer's first projection (see `linear.rs`).
    pub(crate) fn gelu_in_place(values: &mut [f32]) {
        for v in values {
            *v = gelu(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::encoder::tests::max_abs_diff;

    #[test]
    fn the_fast_exponential_matches_the_library_one() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let relative = (exp(x) - x.exp()).abs() / x.exp();
            worst = worst.max(relative);
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert!(exp(-1e30) < 1e-37);
    }

    #[test]
    fn the_fast_gelu_matches_candles_exact_one() {
        let x = Tensor::arange(-1000f32, 1000., &Device::Cpu)
            .unwrap()
            .affine(0.01, 0.003)
            .unwrap();
        let mut ours = x.to_vec1::<f32>().unwrap();
        gelu_in_place(&mut ours);
        let ours = Tensor::new(ours, &Device::Cpu).unwrap();
        let diff = max_abs_diff(&ours, &x.gelu_erf().unwrap());
        assert!(diff < 1e-6, "max difference {diff}");
    }
}
