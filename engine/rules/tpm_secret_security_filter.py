"""Nova's request filter tpm_secret_security_filter: a vTPM (flavor `hw:tpm_version` or image
`hw_tpm_version`) needs the trait of the flavor's `hw:tpm_secret_security` (user, host or
deployment; user when unset): COMPUTE_SECURITY_TPM_SECRET_SECURITY_<POLICY>.

Always on in Nova. A flavor and image that disagree, an unknown TPM version, model or policy, or
model tpm-crb with version 1.2, is InvalidField (Nova raises Invalid, or RequestFilterFailed for
the policy).
"""
from __future__ import annotations

from placecheck_engine.model import InvalidField
from placecheck_engine.nova_fields import TPM_MODEL, TPM_VERSION
from placecheck_engine.rules.request_filter_traits import (FlavorImageValue, RequestFilterTraits, TraitOrigins,
                                                flavor_field, image_properties)

NO_TPM_SECRET_SECURITY_SUPPORT = "NO_TPM_SECRET_SECURITY_SUPPORT"
SECRET_SECURITY_SPEC = "hw:tpm_secret_security"
SECRET_SECURITY_POLICIES = ("user", "host", "deployment")
DEFAULT_POLICY = "user"


class TpmSecretSecurityFilter(RequestFilterTraits):
    name = "tpm_secret_security_filter"
    reason = NO_TPM_SECRET_SECURITY_SUPPORT

    def required_traits(self, request, profile) -> TraitOrigins:
        properties = image_properties(request)
        version = FlavorImageValue.of("tpm_version", request, properties)
        chosen_version = version.unique()
        if chosen_version is None:
            return {}
        if chosen_version not in TPM_VERSION.valid:
            raise version.invalid(chosen_version, TPM_VERSION)
        model = FlavorImageValue.of("tpm_model", request, properties)
        chosen_model = model.unique()
        if chosen_model is not None and chosen_model not in TPM_MODEL.valid:
            raise model.invalid(chosen_model, TPM_MODEL)
        if chosen_model == "tpm-crb" and chosen_version != "2.0":
            raise InvalidField(model.field_of(chosen_model), "TPM model tpm-crb needs TPM version 2.0")
        flavor_policy = request.flavor.extra_specs.get(SECRET_SECURITY_SPEC)
        if flavor_policy and flavor_policy not in SECRET_SECURITY_POLICIES:
            raise InvalidField(flavor_field(SECRET_SECURITY_SPEC),
                               f"{flavor_policy!r} is not one of {', '.join(SECRET_SECURITY_POLICIES)}")
        policy = flavor_policy or DEFAULT_POLICY
        chosen = f"flavor {SECRET_SECURITY_SPEC}={policy}" if flavor_policy else f"the default {policy}"
        origin = f"a vTPM ({version.origin()}) with {chosen}"
        return {f"COMPUTE_SECURITY_TPM_SECRET_SECURITY_{policy.upper()}": (origin,)}
