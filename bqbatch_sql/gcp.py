"""Google Cloud plumbing shared by the production path (BigQuery adapter, Vertex predictor).

Credentials, the region rules of Vertex AI batch prediction, and the translation of
permission errors into the fix a user can act on. Nothing here imports a Google SDK
at module level: `bqbatch --help`, `ls` and `compile` must not pay for them.
Credentials are never printed: messages name the method, the keyfile's path and
the service account's email, never a key or a token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bqbatch_sql.errors import PredictorError, ProfileError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
BIGQUERY_SCOPE = "https://www.googleapis.com/auth/bigquery"

# BigQuery's multi-region locations. Vertex AI batch prediction reads and writes
# BigQuery tables only in a single region, the job's own ("multi-region datasets
# are not supported", Google's page "Batch prediction from BigQuery").
MULTI_REGIONS = frozenset({"US", "EU"})
REGION_RULE = (
    "Vertex AI batch prediction needs the dataset in the same region as the job, "
    "and multi-region datasets (US, EU) are not supported"
)


@dataclass(frozen=True)
class Credentials:
    """Credentials for both clients, and who they are (for messages, never the secret)."""

    bigquery: Any  # google.auth credentials for google-cloud-bigquery
    vertex: Any  # google.auth credentials for google-genai (None: the SDK finds ADC itself)
    method: str
    principal: str | None = None  # service account email when known
    keyfile: str | None = None

    def describe(self) -> str:
        who = f" as {self.principal}" if self.principal else ""
        where = f" (keyfile {self.keyfile})" if self.keyfile else ""
        return f"{self.method}{who}{where}"


def load_credentials(cfg: Any) -> Credentials:
    """Credentials of a `type: bigquery` target: ADC (oauth), a service-account keyfile, or the emulator's."""
    if cfg.method == "emulator":
        from google.auth.credentials import AnonymousCredentials
        from google.oauth2.credentials import Credentials as TokenCredentials

        if not cfg.api_endpoint:
            raise ProfileError(
                "Target method 'emulator' needs `api_endpoint:` (the emulator's URL, e.g. http://127.0.0.1:9050; "
                "`bqbatch emulator` prints it)."
            )
        # google-genai refuses AnonymousCredentials; a static token that never refreshes is what it accepts.
        return Credentials(AnonymousCredentials(), TokenCredentials(token="bqbatch-emulator"), "emulator")
    if cfg.method == "service-account":
        return _service_account(cfg.keyfile)
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        creds, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE, BIGQUERY_SCOPE])
    except DefaultCredentialsError:
        raise ProfileError(
            "No Google Cloud credentials found for the target's method 'oauth' (application default credentials). "
            "Run `gcloud auth application-default login`, or set `method: service-account` with `keyfile:` "
            "in profiles.yml."
        ) from None
    return Credentials(creds, creds, "oauth (application default credentials)",
                       principal=getattr(creds, "service_account_email", None))


def _service_account(keyfile: str | None) -> Credentials:
    from pathlib import Path

    if not keyfile:
        raise ProfileError(
            "Target method 'service-account' needs `keyfile:` (the path of the service account's JSON key).")
    path = Path(keyfile).expanduser()
    if not path.is_file():
        raise ProfileError(f"The service account keyfile '{path}' does not exist. Fix `keyfile:` in profiles.yml.")
    from google.oauth2 import service_account

    try:
        creds = service_account.Credentials.from_service_account_file(
            str(path), scopes=[CLOUD_PLATFORM_SCOPE, BIGQUERY_SCOPE])
    except (ValueError, KeyError) as e:
        # The parser's message may quote the key's fields; say only what kind of problem it is.
        raise ProfileError(
            f"The keyfile '{path}' is not a service account JSON key ({type(e).__name__}). "
            f"Download a key with `gcloud iam service-accounts keys create KEYFILE --iam-account=SA_EMAIL`."
        ) from None
    return Credentials(creds, creds, "service-account", principal=creds.service_account_email, keyfile=str(path))


# -- permissions -------------------------------------------------------------------


def grant_command(project: str, principal: str | None = None) -> str:
    """The seeds' gcloud command granting roles/bigquery.user, filled in where bqbatch knows the values."""
    if principal and principal.endswith(".iam.gserviceaccount.com"):
        member = f"serviceAccount:{principal}"
    else:
        member = f"serviceAccount:SERVICE_ACCOUNT_ID@{project}.iam.gserviceaccount.com"
    return (
        f"    gcloud projects add-iam-policy-binding {project} \\\n"
        f"        --member=\"{member}\" \\\n"
        f"        --role=\"roles/bigquery.user\""
    )


def permission_message(service: str, detail: str, project: str, principal: str | None) -> str:
    who = principal or "the credentials in use"
    return (
        f"{service} denied permission to {who}: {detail}\n"
        f"The service account that runs bqbatch (and the one Vertex AI batch prediction uses) needs the "
        f"BigQuery User role on project {project}. Grant it with:\n{grant_command(project, principal)}"
    )


# -- regions -------------------------------------------------------------------------


def is_multi_region(location: str | None) -> bool:
    return bool(location) and location.upper() in MULTI_REGIONS


def check_job_region(job_location: str, dataset: str, dataset_location: str | None, role: str) -> None:
    """Pre-flight: the job and the dataset of its input/output table share one single region."""
    if dataset_location is None:
        raise PredictorError(
            f"The {role} dataset {dataset} does not exist. Run the model's upstream nodes first, "
            f"or create the dataset in the job's region {job_location}."
        )
    if is_multi_region(dataset_location):
        raise PredictorError(
            f"The {role} dataset {dataset} is in the multi-region location {dataset_location}. {REGION_RULE}. "
            f"Use a dataset in a single region (e.g. us-central1 or europe-west4): set `dataset:` and `location:` "
            f"of the target in profiles.yml to a regional dataset (bqbatch creates it), and the predictor's "
            f"`location:` to the same region."
        )
    if dataset_location.lower() != job_location.lower():
        raise PredictorError(
            f"The batch job would run in {job_location} but the {role} dataset {dataset} is in {dataset_location}. "
            f"{REGION_RULE}. Set the predictor's `location: {dataset_location.lower()}` in profiles.yml (or leave it "
            f"out: it defaults to the dataset's location), or use a dataset in {job_location}."
        )


def console_url(job_name: str) -> str | None:
    """The Cloud console page of a Vertex batch job, from its resource name."""
    parts = job_name.split("/")
    if len(parts) != 6 or parts[0] != "projects" or parts[4] != "batchPredictionJobs":
        return None
    project, location, job_id = parts[1], parts[3], parts[5]
    return (f"https://console.cloud.google.com/vertex-ai/batch-predictions/locations/{location}/"
            f"batch-predictions/{job_id}?project={project}")
