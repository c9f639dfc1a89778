"""The two-rate fine-tuning optimizer: the encoder's steps are scaled, the rest are Adam's, and a
checkpoint resumes with the same rates."""
import keras
import numpy as np
import pytest

from training.optimizers import EncoderRateAdam


def two_layer_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="slow")(inputs)
    outputs = keras.layers.Dense(1, name="fast")(hidden)
    return keras.Model(inputs, outputs)


def one_step(model, optimizer):
    model.compile(optimizer=optimizer, loss="mse")
    before = [weight.copy() for weight in model.get_weights()]
    model.train_on_batch(np.ones((2, 3), "float32"), np.full((2, 1), 5.0, "float32"))
    return [np.abs(after - start) for after, start in zip(model.get_weights(), before)]


def test_encoder_variables_step_at_their_factor_of_the_rate():
    keras.utils.set_random_seed(0)
    model = two_layer_model()
    slow = [variable.path for variable in model.get_layer("slow").trainable_variables]
    steps = one_step(model, EncoderRateAdam(1e-2, encoder_variables=slow, encoder_rate_factor=0.1))
    # Adam's first step moves every weight with a gradient by about the rate, whatever the gradient's scale.
    slow_kernel, slow_bias, fast_kernel, fast_bias = steps
    np.testing.assert_allclose(fast_kernel, 1e-2, rtol=1e-3)
    np.testing.assert_allclose(fast_bias, 1e-2, rtol=1e-3)
    np.testing.assert_allclose(slow_kernel[slow_kernel > 0], 1e-3, rtol=1e-3)
    assert np.count_nonzero(slow_kernel) > 0


def test_the_rates_survive_a_checkpoint(tmp_path):
    keras.utils.set_random_seed(0)
    model = two_layer_model()
    slow = [variable.path for variable in model.get_layer("slow").trainable_variables]
    one_step(model, EncoderRateAdam(1e-2, encoder_variables=slow, encoder_rate_factor=0.25))
    model.save(tmp_path / "last.keras")
    resumed = keras.saving.load_model(tmp_path / "last.keras")
    assert isinstance(resumed.optimizer, EncoderRateAdam)
    assert resumed.optimizer.encoder_rate_factor == 0.25 and resumed.optimizer.encoder_variables == sorted(slow)
    # The reloaded model's variables carry the same names, so the resumed steps are scaled as before.
    before = resumed.get_layer("slow").get_weights()[1].copy()
    resumed.train_on_batch(np.ones((2, 3), "float32"), np.full((2, 1), 5.0, "float32"))
    assert 0 < np.max(np.abs(resumed.get_layer("slow").get_weights()[1] - before)) <= 0.25 * 1e-2 * 1.01


def test_names_that_match_nothing_are_an_error_not_a_silent_single_rate():
    with pytest.raises(ValueError, match="none of the encoder's variables"):
        one_step(two_layer_model(), EncoderRateAdam(1e-2, encoder_variables=["nowhere/kernel"], encoder_rate_factor=0.1))
