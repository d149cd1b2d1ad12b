"""Generated face–voice datasets: people whose faces and voices share latent traits.

Each person draws three latent traits, and both modalities are built from them:
    masculinity  (0-1, bimodal with gender)  -> voice variant (m1-m7 / f1-f5) and pitch;
                                                jaw width, face height, brow thickness,
                                                beard (about half the men) and hair length
    age          (0-1)                       -> lower pitch, narrower pitch range;
                                                age lines, lighter (greying) hair, a higher
                                                hairline, reading glasses (drawn above 0.85)
    build        (normal)                    -> slower speech; wider, rounder face
Every trait carries independent noise in each modality, and the rest of the face (skin, eyes,
nose, pose, light, expression) and of the voice (which variant within a gender, the sentence,
gain, background noise) is drawn independently, so matching unseen people is learnable but
not certain.

VoxCeleb1 layout (`write_voxceleb`), as published:
    root/vox1_meta.csv     tab-separated, header `VoxCeleb1 ID<TAB>VGGFace1 ID<TAB>Gender<TAB>
                           Nationality<TAB>Set`; Gender m/f; Set dev/test (the last `n_test`
                           people are test, as VoxCeleb1's test ids are one contiguous block)
    root/wav/id1NNNN/<youtube-id>/00001.wav ...       16 kHz mono PCM16
    root/unzippedFaces/<VGGFace1 ID>/1.6/<youtube-id>/0000375.jpg ...   face-track frames
Paired folders (`write_paired`): files that belong together share their path stem:
    root/images/<person>/<NN>.jpg   and   root/audio/<person>/<NN>.wav

Writers build in a hidden sibling folder renamed into place at the end, and leave the
`.avlab_synth.json` stamp. The same seed gives the same people, file names, images and meta
file; the speech is the same up to espeak-ng's small take-to-take variation in timing (the
library carries some state from one utterance to the next).
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from avlab.audio import ESPEAK_SAMPLE_RATE, VoiceSettings, resample, synthesize, to_float, write_wav
from avlab.data_utils import staged_folder, write_synth_stamp
from avlab.faces.render import HAPPY, NEUTRAL, Expression, FaceIdentity, Viewing, render_face

META_FILE = "vox1_meta.csv"
META_HEADER = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
FACES_DIR = "unzippedFaces"
FACE_TRACK_VERSION = "1.6"
FIRST_ID = 10001  # VoxCeleb1 ids run id10001 - id11251
# Face-track frames are tight crops around the face: Viewing.scale x this.
FACE_TRACK_FRAMING = 1.35
# Pose, light and camera variation, 0 (studio) - 1 (the renderer's full range).
VIEW_STRENGTH = 0.4
# Interview footage: people talking look neutral or smile, this share of frames smiling.
TALKING_SMILE_SHARE = 0.3

# Mean masculinity and espeak base pitch (0-99) of women (False) and men (True).
_MASCULINITY = {False: 0.25, True: 0.75}
_PITCH = {False: 78, True: 45}
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7")
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
NATIONALITIES = ("USA", "UK", "Canada", "Ireland", "India", "Australia", "Germany", "Norway")
FIRST_NAMES = (
    "Ada",
    "Ben",
    "Cleo",
    "Dev",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivo",
    "Jun",
    "Kai",
    "Lena",
    "Milo",
    "Nia",
    "Omar",
    "Pia",
    "Quin",
    "Rosa",
    "Sami",
    "Tess",
    "Uma",
    "Vik",
    "Wren",
    "Xan",
    "Yara",
    "Zeno",
    "Ana",
    "Bo",
    "Cyd",
    "Dara",
)
LAST_NAMES = (
    "Abbot",
    "Baird",
    "Carver",
    "Dunn",
    "Ellis",
    "Frost",
    "Grant",
    "Hale",
    "Irwin",
    "Joyce",
    "Keane",
    "Lowe",
    "Marsh",
    "Nash",
    "Oakes",
    "Price",
    "Quill",
    "Reyes",
    "Stone",
    "Tate",
    "Upton",
    "Vance",
    "Wells",
    "Xu",
    "Yates",
    "Zane",
    "Amos",
    "Birch",
    "Croft",
    "Drake",
)
# Harvard sentences (IEEE 1969), the classic phonetically balanced test material.
SENTENCES = (
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
    "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.",
    "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.",
    "The swan dive was far short of perfect.",
)


@dataclass(frozen=True)
class Person:
    """One generated identity: its latent traits and the face and voice they became."""

    index: int
    gender: str  # "m" | "f"
    masculinity: float
    age: float
    build: float
    nationality: str
    face: FaceIdentity
    voice: VoiceSettings

    @property
    def voxceleb_id(self) -> str:
        """VoxCeleb1-style id, id10001 upwards."""
        return f"id{FIRST_ID + self.index}"

    @property
    def name(self) -> str:
        """A VGGFace1-style name (First_Last), unique per index."""
        first = FIRST_NAMES[self.index % len(FIRST_NAMES)]
        last = LAST_NAMES[(self.index // len(FIRST_NAMES)) % len(LAST_NAMES)]
        repeat = self.index // (len(FIRST_NAMES) * len(LAST_NAMES))
        return f"{first}_{last}" + (f"_{repeat + 1}" if repeat else "")


def _clip(value: float, low: float, high: float) -> float:
    """`value` limited to [low, high], as a plain float."""
    return float(np.clip(value, low, high))


def sample_person(rng: np.random.Generator, index: int) -> Person:
    """Draw a person: latent traits first, then a face and a voice that both depend on them."""
    male = bool(rng.uniform() < 0.5)
    masculinity = _clip(rng.normal(_MASCULINITY[male], 0.1), 0.0, 1.0)
    age = float(rng.uniform())
    build = float(rng.normal())
    return Person(
        index=index,
        gender="m" if male else "f",
        masculinity=masculinity,
        age=age,
        build=build,
        nationality=str(rng.choice(NATIONALITIES)),
        face=_face_of(rng, male, masculinity, age, build),
        voice=_voice_of(rng, male, masculinity, age, build),
    )


def _face_of(
    rng: np.random.Generator, male: bool, masculinity: float, age: float, build: float
) -> FaceIdentity:
    """A random face whose shape, hair and lines follow the latent traits (plus noise)."""
    n = rng.normal
    return replace(
        FaceIdentity.sample(rng),
        jaw_width=_clip(0.70 + 0.26 * masculinity + 0.04 * build + n(0, 0.02), 0.70, 0.98),
        face_height=_clip(1.07 + 0.16 * masculinity - 0.03 * build + n(0, 0.02), 1.05, 1.25),
        brow_thickness=_clip(0.045 + 0.04 * masculinity + n(0, 0.006), 0.045, 0.09),
        face_width=_clip(0.86 + 0.07 * build + n(0, 0.01), 0.76, 0.96),
        beard=float(rng.uniform(0.5, 1.0)) if male else 0.0,
        hair_length=float(rng.uniform(0.0, 0.3) if masculinity > 0.5 else rng.uniform(0.5, 1.0)),
        age_lines=_clip(age + n(0, 0.08), 0.0, 1.0),
        hair_darkness=_clip(0.95 - 0.85 * age + n(0, 0.06), 0.0, 1.0),
        hairline=_clip(-0.8 + 0.3 * age + n(0, 0.04), -0.85, -0.45),
        glasses=_clip(age + n(0, 0.1), 0.0, 1.0),
    )


def _voice_of(
    rng: np.random.Generator, male: bool, masculinity: float, age: float, build: float
) -> VoiceSettings:
    """An espeak voice whose variant, pitch, range and rate follow the latent traits (plus noise)."""
    n = rng.normal
    return VoiceSettings(
        voice="en-us",
        variant=str(rng.choice(MALE_VARIANTS if male else FEMALE_VARIANTS)),
        pitch=int(
            round(
                _clip(
                    _PITCH[male] - 30 * (masculinity - _MASCULINITY[male]) - 30 * age + n(0, 2),
                    5,
                    95,
                )
            )
        ),
        pitch_range=int(round(_clip(80 - 50 * age + n(0, 6), 10, 95))),
        rate=int(round(_clip(175 - 35 * build + n(0, 8), 110, 260))),
    )


def speak(person: Person, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One utterance of a random sentence, with small per-take changes, gain and room noise."""
    take = replace(
        person.voice,
        pitch=int(np.clip(person.voice.pitch + rng.normal(0, 2), 0, 99)),
        rate=int(np.clip(person.voice.rate + rng.normal(0, 6), 80, 450)),
    )
    audio = to_float(synthesize(str(rng.choice(SENTENCES)), take))
    audio = resample(audio, ESPEAK_SAMPLE_RATE, sample_rate)
    audio = audio * (rng.uniform(0.4, 0.9) / max(1e-3, float(np.abs(audio).max())))
    snr_db = rng.uniform(25, 40)
    noise_rms = np.sqrt(np.mean(audio**2)) / 10 ** (snr_db / 20)
    return (audio + rng.normal(0, noise_rms, audio.shape)).astype(np.float32)


def face_image(person: Person, rng: np.random.Generator, size: int) -> bytes:
    """JPEG bytes of one frame of the person talking: neutral or smiling, any pose, light, camera."""
    view = Viewing.sample(rng, strength=VIEW_STRENGTH)
    view = replace(view, scale=view.scale * FACE_TRACK_FRAMING)
    emotion = HAPPY if rng.uniform() < TALKING_SMILE_SHARE else NEUTRAL
    rgb = render_face(person.face, Expression.sample(rng, emotion), view, size, rng)
    ok, buf = cv2.imencode(
        ".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, max(60, view.jpeg_quality)]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator per (seed, keys), so item i does not depend on the ones before."""
    return np.random.default_rng([int(seed), *map(int, keys)])


def _youtube_id(rng: np.random.Generator) -> str:
    """An 11-character YouTube-style video id."""
    alphabet = np.array(list(string.ascii_letters + string.digits + "-_"))
    return "".join(rng.choice(alphabet, 11))


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded: per-clip resampling is too small to pay for a thread team,
    and on a busy machine the team's spin-waits made it ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def write_voxceleb(
    root: str | Path,
    n_identities: int = 600,
    n_test: int = 60,
    clips_per_identity: int = 2,
    utterances_per_clip: int = 2,
    frames_per_clip: int = 2,
    image_size: int = 96,
    sample_rate: int = 16_000,
    seed: int = 0,
) -> Path:
    """Write a VoxCeleb1-layout dataset: meta CSV, wav/ utterances and face-track frames."""
    if not 0 < n_test < n_identities:
        raise ValueError(f"need 0 < n_test < n_identities, got {n_test}, {n_identities}")
    root = Path(root)
    rows = ["\t".join(META_HEADER) + "\n"]
    with staged_folder(root) as folder, _one_torch_thread():
        for i in tqdm(
            range(n_identities), desc=f"VoxCeleb1 layout -> {root}", unit="person", mininterval=0.5
        ):
            person = sample_person(_rng(seed, i), i)
            split = "test" if i >= n_identities - n_test else "dev"
            rows.append(
                f"{person.voxceleb_id}\t{person.name}\t{person.gender}\t{person.nationality}\t{split}\n"
            )
            for c in range(clips_per_identity):
                # Faces and takes draw from separate generators: a take's length (and so how
                # many numbers its noise consumes) varies a little from run to run.
                clip_rng = _rng(seed, i, c + 1)
                clip = _youtube_id(clip_rng)
                for u in range(utterances_per_clip):
                    wav = folder / "wav" / person.voxceleb_id / clip / f"{u + 1:05d}.wav"
                    write_wav(
                        wav, speak(person, _rng(seed, i, c + 1, u + 1), sample_rate), sample_rate
                    )
                track = folder / FACES_DIR / person.name / FACE_TRACK_VERSION / clip
                track.mkdir(parents=True)
                first_frame = int(clip_rng.integers(1, 5000))
                for f in range(frames_per_clip):
                    frame = first_frame + 25 * f
                    (track / f"{frame:07d}.jpg").write_bytes(
                        face_image(person, clip_rng, image_size)
                    )
        (folder / META_FILE).write_text("".join(rows))
        params = dict(
            n_identities=n_identities,
            n_test=n_test,
            clips_per_identity=clips_per_identity,
            utterances_per_clip=utterances_per_clip,
            frames_per_clip=frames_per_clip,
            image_size=image_size,
            sample_rate=sample_rate,
            seed=seed,
        )
        write_synth_stamp(folder, f"{__name__}.write_voxceleb", params)
    return root


def write_paired(
    root: str | Path,
    n_identities: int = 100,
    pairs_per_identity: int = 4,
    image_size: int = 96,
    sample_rate: int = 16_000,
    seed: int = 0,
) -> Path:
    """Write paired folders: images/<person>/<NN>.jpg beside audio/<person>/<NN>.wav."""
    root = Path(root)
    with staged_folder(root) as folder, _one_torch_thread():
        for i in tqdm(
            range(n_identities), desc=f"paired folders -> {root}", unit="person", mininterval=0.5
        ):
            person = sample_person(_rng(seed, i), i)
            (folder / "images" / person.name).mkdir(parents=True)
            for k in range(pairs_per_identity):
                image = face_image(person, _rng(seed, i, k + 1, 0), image_size)
                (folder / "images" / person.name / f"{k:02d}.jpg").write_bytes(image)
                audio = speak(person, _rng(seed, i, k + 1, 1), sample_rate)
                write_wav(folder / "audio" / person.name / f"{k:02d}.wav", audio, sample_rate)
        params = dict(
            n_identities=n_identities,
            pairs_per_identity=pairs_per_identity,
            image_size=image_size,
            sample_rate=sample_rate,
            seed=seed,
        )
        write_synth_stamp(folder, f"{__name__}.write_paired", params)
    return root


SYNTHESIZERS = {"voxceleb": write_voxceleb, "paired": write_paired}
