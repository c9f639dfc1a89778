"""Fine-tuning with two learning rates: the pretrained encoder's weights move slower than the decoder's.

Keras 3 has no per-layer learning rate, and scaling the encoder's gradients instead would do nothing
under Adam (its steps do not depend on the gradient's scale). So the optimizer scales the step itself.
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="training")
class EncoderRateAdam(keras.optimizers.Adam):
    """Adam whose steps for the variables named in `encoder_variables` (their `.path`) are
    `encoder_rate_factor` times the rate every other variable gets, schedule included.

    The names travel in the optimizer's config, so a checkpoint resumes with the same two rates.
    """

    def __init__(self, learning_rate=0.001, encoder_variables=(), encoder_rate_factor: float = 1.0,
                 name="encoder_rate_adam", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.encoder_variables = sorted(encoder_variables)
        self.encoder_rate_factor = float(encoder_rate_factor)
        self._encoder_indices: set[int] = set()

    def build(self, var_list):
        super().build(var_list)
        names = set(self.encoder_variables)
        self._encoder_indices = {self._get_variable_index(variable) for variable in var_list if variable.path in names}
        if names and not self._encoder_indices:
            raise ValueError("EncoderRateAdam: none of the encoder's variables is among those it trains")

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._encoder_indices:
            learning_rate = learning_rate * self.encoder_rate_factor
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "encoder_variables": self.encoder_variables,
                "encoder_rate_factor": self.encoder_rate_factor}
