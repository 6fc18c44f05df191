"""The `avatar-server` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from server.settings import Settings, SettingsError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from server.api.access import check_exposure, load_api_keys
    from server.app import create_app
    from server.lipsync.selection import EngineUnavailableError, check_engine
    from server.logs import configure_logging
    from server.serving import uvicorn_config

    try:
        overrides = {"allow_open_access": True} if args.allow_open else {}
        settings = Settings.from_env(host=args.host, port=args.port, **overrides)
        level = (args.log_level or settings.log_level).upper()
        configure_logging(level, settings.log_format)
        check_exposure(settings, load_api_keys(settings))
        check_engine(settings)
    except (SettingsError, EngineUnavailableError) as error:
        print(f"avatar-server: {error}", file=sys.stderr)
        return 2
    app = create_app(settings)
    shown_host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    logging.getLogger("server").info(
        "open http://%s:%d/ to try the avatar (API docs: /docs)", shown_host, args.port
    )
    # uvicorn leaves logging as configure_logging set it (serving.py: log_config=None).
    uvicorn.Server(uvicorn_config(app, settings, log_level=level.lower())).run()
    return 0


def _prepare_avatar(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from server.avatars.errors import AvatarError
    from server.avatars.face_box import parse_box
    from server.avatars.preparation import PreparationRequest, Preparer
    from server.avatars.store import check_new_avatar_id

    try:
        settings = Settings.from_env()
        bbox = parse_box(args.bbox) if args.bbox else None
    except (SettingsError, ValueError) as error:
        print(f"avatar-server: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=(args.log_level or "warning").upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    request = PreparationRequest(
        args.video, args.avatar_id, bbox, args.force, args.video.name,
        musetalk_version=args.musetalk_version, bbox_shift=args.bbox_shift,
    )
    with tqdm(total=100, unit="%", desc=f"preparing {args.avatar_id}", bar_format=PROGRESS_BAR) as bar:

        def progress(share: float) -> None:
            bar.update(round(100 * share) - bar.n)

        try:
            if not args.video.is_file():
                raise AvatarError(f"There is no file {args.video}.", 400)
            check_new_avatar_id(args.avatar_id)
            result = Preparer.from_settings(settings).prepare(request, progress)
        except AvatarError as error:
            bar.close()
            print(f"avatar-server: {error.message}", file=sys.stderr)
            return 1
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(_store_latents(settings, result.directory))
    if result.reused:
        print(
            f"Avatar {result.avatar_id} is already prepared from this video in {result.directory}; "
            "nothing to do (--force prepares it again)."
        )
    else:
        seconds_of_video = result.frame_count / result.fps
        print(
            f"Avatar {result.avatar_id} prepared in {result.directory}: {result.frame_count} frames "
            f"({seconds_of_video:.1f} s) in {result.seconds:.1f} s "
            f"({result.seconds / seconds_of_video:.2f} s per second of video)."
        )
    return 0


def _store_latents(settings: Settings, directory: Path) -> str:
    """Encode a prepared avatar's latents with MuseTalk's VAE when its weights are here."""
    from server.avatars.storage import load_prepared
    from server.lipsync.musetalk.avatar import prepared_latents
    from server.lipsync.musetalk.model import dtype_for
    from server.lipsync.musetalk.vae import load_face_encoder
    from server.lipsync.musetalk.weights import WeightsError, locate_weights
    from server.lipsync.selection import EngineUnavailableError, resolve_device

    weights = locate_weights(settings.models_dir, settings.musetalk_version)
    if weights.problems("vae"):
        return (
            f"Latents: not computed (no usable VAE in {weights.vae_dir}); the musetalk engine "
            "computes them when it first loads the avatar."
        )
    try:
        device = resolve_device(settings.lipsync_device)
        encoder = load_face_encoder(weights, device, dtype_for(device))
        latents = prepared_latents(load_prepared(directory), encoder)
    except (WeightsError, EngineUnavailableError) as error:
        return f"Latents: not computed ({error})."
    return f"Latents: {len(latents)} frames encoded with {weights.vae_dir} on {device}."


PROGRESS_BAR = "{desc}: {percentage:3.0f}%|{bar}| {elapsed} elapsed, {remaining} left"


def _check_models(args: argparse.Namespace) -> int:
    from server.avatars.preparation import check_preparation_weights
    from server.lipsync.musetalk.weights import check_loads

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        models_dir = args.models_dir or Settings.from_env().models_dir
    except SettingsError as error:
        print(f"avatar-server: {error}", file=sys.stderr)
        return 2
    ok = check_loads(models_dir, args.version or ())
    for usable, sentence in check_preparation_weights(models_dir):
        print(sentence, file=sys.stdout if usable else sys.stderr)
        ok = ok and usable
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="avatar-server", description="Stream a lip-synced talking avatar over WebRTC."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP and WebRTC server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--log-level", default=None, help="debug, info, warning (LOG_LEVEL)")
    serve.add_argument(
        "--allow-open", action="store_true",
        help="listen beyond loopback without API keys: anyone who reaches it may use it "
        "(ALLOW_OPEN_ACCESS=1)",
    )
    serve.set_defaults(run=_serve)

    prepare = commands.add_parser(
        "prepare-avatar",
        help="prepare an avatar from a video of a person (5-60 s, looking at the camera)",
        description="Prepare an avatar from a video into AVATARS_DIR; sessions can use it at once.",
    )
    prepare.add_argument("video", type=Path, help="the video file (mp4, mov, webm, mkv...)")
    prepare.add_argument("--avatar-id", required=True, help="the avatar's name: letters, digits, _ . -")
    prepare.add_argument(
        "--bbox", metavar="X1,Y1,X2,Y2",
        help="the face box (pixels) for every frame, instead of finding the face",
    )
    prepare.add_argument(
        "--musetalk-version", choices=("1.5", "1.0"), default=None,
        help="the MuseTalk version to prepare for (its face box and mask recipe); "
        "default: the one the server runs (MUSETALK_VERSION and the weights in MODELS_DIR)",
    )
    prepare.add_argument(
        "--bbox-shift", type=int, default=None, metavar="PIXELS",
        help="MuseTalk 1.0 only: move the face box's vertical centre down (+) or up (-) by this "
        "many pixels; a larger value opens the mouth less (default: MUSETALK_BBOX_SHIFT, 0)",
    )
    prepare.add_argument(
        "--force", action="store_true",
        help="prepare again even if the avatar exists (from this video or another)",
    )
    prepare.add_argument("--log-level", default=None, help="debug, info, warning (default)")
    prepare.set_defaults(run=_prepare_avatar)
    check = commands.add_parser(
        "check-models",
        help="load every weight file in MODELS_DIR on the CPU and say what is wrong",
    )
    check.add_argument("--models-dir", type=Path, default=None, help="default: MODELS_DIR or ./models")
    check.add_argument(
        "--version", action="append", choices=("1.5", "1.0"),
        help="MuseTalk version to check (repeatable); default: those present",
    )
    check.set_defaults(run=_check_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)
