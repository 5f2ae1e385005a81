"""What a person may submit, checked the same way for the pages and the HTTP API: names, ports,
secrets, rotations, references and peering requests. Both front ends build on these forms."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any, TypeVar

from django import forms
from django.core.exceptions import ValidationError
from django.db import models

from networking import endpoints, mtls, naming, references, rotation
from networking.crypto import SecretText
from networking.models import (
    ALIAS_CHOICES,
    ALIAS_DEFAULT,
    MAX_PORTS,
    Project,
    Service,
    SharedSecret,
)

_PORT_SEPARATORS = re.compile(r"[\s,]+")


class PortListField(forms.CharField):
    """Ports typed as ``3000`` or ``3000, 9090``, cleaned to a list of ints."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 100)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return ", ".join(str(port) for port in value)
        return value

    def to_python(self, value: Any) -> list[int]:  # type: ignore[override]
        if isinstance(value, list):
            # A disabled field (a database's ports) cleans its initial value: already a list.
            value = ", ".join(str(port) for port in value)
        text = super().to_python(value) or ""
        ports: list[int] = []
        for item in _PORT_SEPARATORS.split(text.strip()):
            if not item:
                continue
            if not item.isdecimal() or not item.isascii():
                raise forms.ValidationError(
                    f"“{item[:20]}” is not a port number. Enter whole numbers from 1 to 65535, "
                    "separated by commas.",
                    code="invalid",
                )
            port = int(item)
            if not 1 <= port <= 65535:
                raise forms.ValidationError(
                    f"Port {port} is out of range: ports go from 1 to 65535.", code="range"
                )
            if port in ports:
                raise forms.ValidationError(f"Port {port} is listed twice.", code="duplicate")
            ports.append(port)
        if len(ports) > MAX_PORTS:
            raise forms.ValidationError(
                f"A service can expose at most {MAX_PORTS} ports.", code="too_many"
            )
        return ports


_Model = TypeVar("_Model", bound=models.Model)


class OneMessagePerField(forms.ModelForm[_Model]):
    """A model form whose fields each say what is wrong once.

    Django checks the model as well as the form, and the model's ``clean()`` looks at every
    field: a name the form found missing got "This field is required." and the model's "Enter
    a name…", ports out of range got the form's reason and the model's "Enter the port…" (for
    the empty list the refused ports left behind). A field the form refused keeps the form's
    message only; the model's still stand for the fields the form took."""

    def _update_errors(self, errors: ValidationError) -> None:
        if hasattr(errors, "error_dict"):
            errors = ValidationError(
                {
                    field: messages
                    for field, messages in errors.error_dict.items()
                    if field not in self.fields or field not in self.errors
                }
            )
        super()._update_errors(errors)  # type: ignore[misc]  # Django's, not in its stubs


class ServiceForm(OneMessagePerField[Service]):
    """Create a service, or (with an existing instance) rename it and change its ports."""

    ports = PortListField(
        required=False,
        help_text="Web services default to 8080. Databases always use their standard port.",
    )
    keep_old_name_for = forms.TypedChoiceField(
        label="If you rename it, keep the old hostname resolving for",
        choices=ALIAS_CHOICES,
        coerce=int,
        initial=int(ALIAS_DEFAULT.total_seconds()),
        required=False,
        help_text="Callers still using the old name reach the service meanwhile, and no other "
        "service can take that name. You can extend it or end it early on the service’s page.",
    )

    class Meta:
        model = Service
        fields = ["display_name", "kind"]
        labels = {"display_name": "Name"}
        error_messages = {"display_name": {"required": naming.EMPTY_NAME}}
        help_texts = {
            "display_name": "Becomes the private hostname: “Background Worker” → "
            "background-worker.internal."
        }

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.project = project
        self.fields["kind"].widget.attrs.update(
            {
                "data-default-ports": json.dumps(
                    {
                        kind: ", ".join(map(str, Service.default_ports(kind)))
                        for kind in Service.Kind
                    }
                ),
                "data-database-kinds": ",".join(sorted(Service.DATABASE_KINDS)),
            }
        )
        self.fields["ports"].widget.attrs.update(
            {"placeholder": "8080", "autocomplete": "off", "inputmode": "text"}
        )
        if not self.instance.pk:
            del self.fields["keep_old_name_for"]  # nothing to rename yet
        if self.instance.pk:
            # A service's kind is fixed: a database does not turn into a web service.
            self.fields["kind"].disabled = True
            self.initial["ports"] = self.instance.ports
            if self.instance.is_database:
                self.fields["ports"].disabled = True
        else:
            self.initial.setdefault("kind", Service.Kind.WEB)
            self.initial.setdefault("ports", Service.default_ports(Service.Kind.WEB))

    @property
    def keep_old_name(self) -> timedelta:
        """How long a rename keeps the old hostname resolving (after ``is_valid()``)."""
        seconds = self.cleaned_data.get("keep_old_name_for")
        if seconds in (None, ""):
            return ALIAS_DEFAULT
        return timedelta(seconds=int(seconds))

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("kind") or self.instance.kind
        ports = cleaned.get("ports")
        standard = Service.default_ports(kind)
        asked = self._asked_ports()
        if kind in Service.DATABASE_KINDS and asked and asked != standard:
            # Said, not silently replaced: a script asking for 6000 must not get 5432 unawares
            # (a database's field is disabled once it exists: what was sent is still read).
            self.add_error(
                "ports",
                ValidationError(
                    f"{Service.Kind(kind).label} always listens on port {standard[0]}: leave "
                    "the ports out, or give that one.",
                    code="fixed_port",
                ),
            )
            self.instance.ports = standard  # one message, this one (not the model's as well)
            return cleaned
        if kind in Service.DATABASE_KINDS or (
            kind == Service.Kind.WEB and ports == [] and "ports" not in self.errors
        ):
            ports = Service.default_ports(kind)
        if ports is not None:
            self.instance.ports = ports
        return cleaned

    def _asked_ports(self) -> list[int] | None:
        """The ports as sent (None: none, or not a list of ports)."""
        raw = self.data.get(self.add_prefix("ports"))
        if not raw:
            return None
        try:
            return PortListField(required=False).clean(raw)  # type: ignore[no-any-return]
        except ValidationError:
            return None


class ProjectForm(OneMessagePerField[Project]):
    class Meta:
        model = Project
        fields = ["name"]
        labels = {"name": "Project name"}
        help_texts = {"name": "Renaming a project changes nothing in the cluster."}


class _ProjectServicesField(forms.ModelMultipleChoiceField):  # type: ignore[type-arg]
    def label_from_instance(self, obj: Service) -> str:
        return f"{obj.display_name} ({obj.internal_hostname})"


class SharedSecretForm(OneMessagePerField[SharedSecret]):
    """Create a shared secret, or (with an instance) change who receives it and its schedule."""

    value = forms.CharField(
        label="Value",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave empty to generate a random 256-bit value (recommended).",
    )
    services = _ProjectServicesField(
        queryset=Service.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "invalid_choice": "A chosen service is not in this project any more: it may have "
            "been deleted meanwhile. Choose again from the services listed."
        },
        label="Services that receive it",
        help_text=(
            "Each one gets it as an environment variable; its pods restart once to pick it up."
        ),
    )
    rotate_every_days = forms.IntegerField(
        label="Rotate automatically every",
        required=False,
        min_value=1,
        max_value=365,
        help_text="Days between scheduled rotations; leave empty to rotate only by hand.",
    )

    class Meta:
        model = SharedSecret
        fields = ["name", "services", "rotate_every_days"]
        labels = {"name": "Environment variable"}
        help_texts = {
            "name": "Upper-case letters, digits and underscores, e.g. INTERNAL_API_SECRET."
        }

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instance.project = project
        self.fields["services"].queryset = project.services.order_by("name")  # type: ignore[attr-defined]
        self.fields["name"].widget.attrs.update(
            {"autocomplete": "off", "spellcheck": "false", "placeholder": "INTERNAL_API_SECRET"}
        )
        self.fields["name"].error_messages["required"] = "Enter a name, like INTERNAL_API_SECRET."
        if self.instance.pk:
            del self.fields["name"]
            del self.fields["value"]

    def clean_name(self) -> str:
        name = rotation.validate_secret_name(self.cleaned_data.get("name", ""))
        clash = SharedSecret.objects.filter(project=self.instance.project, name=name)
        if clash.exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(
                f"This project already has a secret named {name}.", code="duplicate"
            )
        for variable, _ in rotation.environment_names(name):
            service = endpoints.service_suggested(self.instance.project.pk, variable)
            if service is not None:
                raise forms.ValidationError(
                    f"{variable} is the variable this project’s dashboard tells you to set "
                    f"to {service.name}’s "
                    f"{'connection string' if service.is_database else 'internal URL'}; "
                    "a shared secret of that name would overwrite it in the services that "
                    "receive both. Choose another name, such as "
                    f"{name.removesuffix('_URL')}_SECRET.",
                    code="reserved",
                )
        return name

    def clean_value(self) -> str:
        value: str = self.cleaned_data.get("value", "")
        return rotation.validate_pasted_value(value) if value else ""

    def save(self, commit: bool = True) -> SharedSecret:
        if not self.instance.pk:
            self.instance.value = SecretText.seal(
                self.cleaned_data.get("value") or rotation.generate_value()
            )
        return super().save(commit=commit)


class RotateForm(forms.Form):
    value = forms.CharField(
        label="New value",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Leave empty to generate a random 256-bit value (recommended).",
    )

    def clean_value(self) -> str:
        value: str = self.cleaned_data.get("value", "")
        return rotation.validate_pasted_value(value) if value else ""


class ReferenceForm(forms.Form):
    """Give other services of the project this service's address as an environment variable."""

    consumers = _ProjectServicesField(
        queryset=Service.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "required": "Choose the services that should receive it.",
            "invalid_choice": "A chosen service is not in this project any more: it may have "
            "been deleted meanwhile. Choose again from the services listed.",
        },
        label="Services that receive it",
    )
    variable = forms.CharField(
        label="Variable name",
        required=False,
        max_length=100,
        help_text="Leave it empty for the usual name (unique on each service).",
    )

    def __init__(self, *args: Any, source: Service, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        consumers = self.fields["consumers"]
        assert isinstance(consumers, forms.ModelMultipleChoiceField)
        consumers.queryset = source.project.services.exclude(pk=source.pk).order_by("name")
        self.fields["variable"].widget.attrs.update(
            {
                "placeholder": references.DEFAULT_VARIABLES.get(
                    Service.Kind(source.kind), references.own_variable(source)
                ),
                "autocomplete": "off",
                "spellcheck": "false",
            }
        )


class PeeringRequestForm(forms.Form):
    target = forms.CharField(
        label="Project ID to peer with",
        max_length=40,
        help_text="Shown on the other project's Settings page, e.g. k7x2m9q4p8ab.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    justification = forms.CharField(
        label="Why do these projects need to talk privately?",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Support reads this before approving.",
    )


class RejectForm(forms.Form):
    reason = forms.CharField(
        label="Reason (the customer sees it)",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": "Give the customer a reason for the rejection."},
    )


class CallersForm(forms.Form):
    """Which services ``service`` accepts calls from: every service of the project, or those
    chosen. Named ``services`` so the service picker's search (``service-choices``) serves it."""

    EVERY = "every"
    LISTED = "listed"

    accept = forms.ChoiceField(
        label="Accept calls from",
        choices=[
            (EVERY, "Every service of this project"),
            (LISTED, "Only the services chosen below"),
        ],
        widget=forms.RadioSelect,
        error_messages={"required": "Choose who may call it."},
    )
    services = _ProjectServicesField(
        queryset=Service.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "invalid_choice": "A chosen service is not in this project any more: it may have "
            "been deleted meanwhile. Choose again from the services listed."
        },
        label="Services that may call it",
    )

    # Who may call it as the form was drawn (``mtls.callers_version``): a save after someone
    # else's change is refused rather than undoing it unseen.
    version = forms.CharField(widget=forms.HiddenInput, required=False, max_length=32)

    def __init__(self, data: Any = None, *, service: Service) -> None:
        initial = None
        if data is None:  # what it accepts now
            initial = {
                "version": mtls.callers_version(service),
                "accept": self.EVERY if service.accepts_any_caller else self.LISTED,
                "services": list(service.accepts_calls_from.values_list("pk", flat=True)),
            }
        # Its own IDs: unique beside the service page's other forms.
        super().__init__(data, initial=initial, auto_id="mtls_%s")
        field = self.fields["services"]
        assert isinstance(field, forms.ModelMultipleChoiceField)
        field.queryset = Service.objects.filter(project_id=service.project_id).order_by("name")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("accept") == self.LISTED and not cleaned.get("services"):
            self.add_error(
                "services",
                "Choose the services that may call it, or choose “Every service of this "
                "project”. (With none chosen, every call to it would be refused.)",
            )
        return cleaned
