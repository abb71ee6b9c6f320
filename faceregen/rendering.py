"""Off-screen grey renders of face meshes (pyvista / VTK), and the pinhole camera that places them.

Headless: on Linux without ``$DISPLAY`` VTK's default window class tries X first (and logs "bad X server
connection") before falling back to EGL; we select ``vtkEGLRenderWindow`` up front through the
``VTK_DEFAULT_OPENGL_WINDOW`` environment variable, which works with the PyPI VTK 9.7 wheel and Mesa's EGL
(llvmpipe on CPU machines, the driver's EGL on GPU machines). No Xvfb is needed.

Frame: millimetres, x toward the subject's left, y up, z out of the face; the camera sits in front of the
face on +z and looks along -z.
"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass

if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import pyvista as pv  # noqa: E402

from faceregen.mesh_io import vertex_normals  # noqa: E402

pv.OFF_SCREEN = True

#: Directions toward the light (from the face), one render each: front-left, front-right, top, front.
#: "Left"/"right" are the image's: -x is the subject's right, which appears on the image's left.
DEFAULT_LIGHT_DIRS = (
    (-0.6, 0.25, 0.76),
    (0.6, 0.25, 0.76),
    (0.0, 0.8, 0.6),
    (0.0, 0.0, 1.0),
)

#: Surface material: flat grey, Lambertian with a small ambient term (fractions of the light's intensity).
GREY = (0.75, 0.75, 0.75)
AMBIENT = 0.15
DIFFUSE = 0.85


@dataclass(frozen=True)
class Camera:
    """A frontal pinhole camera at ``center_mm + (0, 0, distance_mm)`` looking along -z at ``center_mm``.

    Square images of ``resolution`` pixels, vertical (= horizontal) field of view ``fov_deg``. Pixel
    coordinates: x right, y down, origin at the top-left corner, pixel ``(i, j)`` covering
    ``[i, i + 1) x [j, j + 1)`` (its centre at ``+0.5``).
    """

    resolution: int = 256
    fov_deg: float = 25.0
    distance_mm: float = 600.0
    center_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.resolution < 8:
            raise ValueError(f"camera resolution={self.resolution}: expected at least 8 pixels")
        if not 0.0 < self.fov_deg < 180.0:
            raise ValueError(f"camera fov_deg={self.fov_deg}: expected a value in (0, 180)")
        if self.distance_mm <= 0.0:
            raise ValueError(f"camera distance_mm={self.distance_mm}: expected a positive distance")
        object.__setattr__(self, "center_mm", tuple(float(c) for c in self.center_mm))

    @property
    def focal_px(self) -> float:
        """``f = (resolution / 2) / tan(fov / 2)``, in pixels."""
        return 0.5 * self.resolution / np.tan(np.radians(self.fov_deg) / 2.0)

    @property
    def position_mm(self) -> np.ndarray:
        return np.asarray(self.center_mm) + np.array([0.0, 0.0, self.distance_mm])

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """Pixel coordinates (..., 2) of points (..., 3):

        ``u = W/2 + f (x - c_x) / d``, ``v = H/2 - f (y - c_y) / d`` with depth ``d = distance - (z - c_z)``.
        """
        p = np.asarray(points_mm, dtype=np.float64) - np.asarray(self.center_mm)
        depth = self.distance_mm - p[..., 2]
        if np.any(depth <= 0.0):
            raise ValueError(f"points at or behind the camera plane (distance_mm={self.distance_mm})")
        half = 0.5 * self.resolution
        u = half + self.focal_px * p[..., 0] / depth
        v = half - self.focal_px * p[..., 1] / depth
        return np.stack([u, v], axis=-1)

    @classmethod
    def framing(
        cls, points_mm: np.ndarray, resolution: int = 256, fov_deg: float = 25.0, margin: float = 1.15
    ) -> Camera:
        """The camera centred on the points' bounding box (in x, y) that shows all of them with ``margin``.

        The box's front face (largest z) fills ``1 / margin`` of the image along its longer side.
        """
        points_mm = np.asarray(points_mm, dtype=np.float64)
        if points_mm.ndim != 2 or points_mm.shape[1] != 3 or len(points_mm) == 0:
            raise ValueError(f"framing needs points (N, 3), got {points_mm.shape}")
        lo, hi = points_mm.min(axis=0), points_mm.max(axis=0)
        center = 0.5 * (lo + hi)
        half_extent = 0.5 * float(max(hi[0] - lo[0], hi[1] - lo[1])) * margin
        distance = (hi[2] - center[2]) + half_extent / np.tan(np.radians(fov_deg) / 2.0)
        return cls(resolution=resolution, fov_deg=fov_deg, distance_mm=float(distance), center_mm=tuple(center))

    def to_dict(self) -> dict:
        return {**asdict(self), "center_mm": list(self.center_mm)}

    @classmethod
    def from_dict(cls, data: dict) -> Camera:
        return cls(**{**data, "center_mm": tuple(data["center_mm"])})


def normalised_light_dirs(light_dirs: np.ndarray) -> np.ndarray:
    """Light directions (L, 3) scaled to unit length; zero vectors are an error."""
    dirs = np.asarray(light_dirs, dtype=np.float64)
    if dirs.ndim != 2 or dirs.shape[1] != 3 or len(dirs) == 0:
        raise ValueError(f"light_dirs must be (L, 3) with L >= 1, got {dirs.shape}")
    norms = np.linalg.norm(dirs, axis=1, keepdims=True)
    if np.any(norms < 1e-9):
        raise ValueError(f"light_dirs contain a zero vector: {dirs.tolist()}")
    return dirs / norms


class GreyRenderer:
    """One off-screen VTK window reused for many renders (creating a window costs ~0.1 s; a render ~5 ms).

    Each render draws the mesh in flat grey with Gouraud (per-vertex normal) shading under ONE directional
    light toward ``light_dir`` plus an ambient term ``AMBIENT``, on a black background, without
    anti-aliasing (so silhouettes agree with :meth:`Camera.project` and bytes are reproducible).
    """

    def __init__(self, camera: Camera) -> None:
        self.camera = camera
        self._plotter = pv.Plotter(off_screen=True, window_size=(camera.resolution,) * 2, lighting="none")
        self._plotter.ren_win.SetMultiSamples(0)
        self._plotter.set_background("black")
        self._light = pv.Light(light_type="scene light", intensity=1.0)
        self._light.positional = False
        self._plotter.add_light(self._light)
        vtk_camera = self._plotter.camera
        vtk_camera.position = tuple(camera.position_mm)
        vtk_camera.focal_point = camera.center_mm
        vtk_camera.up = (0.0, 1.0, 0.0)
        vtk_camera.view_angle = camera.fov_deg
        self._mesh: pv.PolyData | None = None
        self._faces: np.ndarray | None = None

    def _set_mesh(self, vertices_mm: np.ndarray, faces: np.ndarray) -> None:
        """Upload the mesh; the VTK actor is rebuilt only when the triangles change."""
        normals = vertex_normals(vertices_mm, faces)
        if self._faces is None or not np.array_equal(self._faces, faces):
            self._plotter.clear_actors()
            cells = np.hstack([np.full((len(faces), 1), 3, dtype=np.int64), faces]).ravel()
            self._mesh = pv.PolyData(np.array(vertices_mm, dtype=np.float32), cells)
            self._mesh.point_data["Normals"] = np.asarray(normals, dtype=np.float32)
            self._mesh.point_data.active_normals_name = "Normals"
            self._plotter.add_mesh(
                self._mesh, color=GREY, ambient=AMBIENT, diffuse=DIFFUSE, specular=0.0, interpolation="gouraud"
            )
            self._faces = np.array(faces, copy=True)
        else:
            self._mesh.points = np.asarray(vertices_mm, dtype=np.float32)
            self._mesh.point_data["Normals"] = np.asarray(normals, dtype=np.float32)
            self._mesh.point_data.active_normals_name = "Normals"
        z = np.asarray(vertices_mm)[:, 2] - self.camera.center_mm[2]
        near = max(1.0, self.camera.distance_mm - float(z.max()) - 10.0)
        far = self.camera.distance_mm - float(z.min()) + 10.0
        self._plotter.camera.clipping_range = (near, far)

    def render(self, vertices_mm: np.ndarray, faces: np.ndarray, light_dirs: np.ndarray) -> np.ndarray:
        """uint8 (L, H, W, 3): the mesh under each light direction in turn."""
        vertices_mm, faces = np.asarray(vertices_mm), np.asarray(faces, dtype=np.int64)
        if vertices_mm.ndim != 2 or vertices_mm.shape[1] != 3 or faces.ndim != 2 or faces.shape[1] != 3:
            raise ValueError(f"render needs vertices (V, 3) and faces (F, 3), got {vertices_mm.shape}, {faces.shape}")
        self._set_mesh(vertices_mm, faces)
        center = np.asarray(self.camera.center_mm)
        images = []
        for direction in normalised_light_dirs(light_dirs):
            self._light.position = tuple(center + direction)
            self._light.focal_point = tuple(center)
            self._plotter.render()
            images.append(self._plotter.screenshot(return_img=True))
        return np.stack(images).astype(np.uint8)

    def close(self) -> None:
        self._plotter.close()


_renderer: list[GreyRenderer] = []


def renderer_for(camera: Camera) -> GreyRenderer:
    """The process's one :class:`GreyRenderer`, (re)created when the camera changes."""
    if _renderer and _renderer[0].camera != camera:
        _renderer.pop().close()
    if not _renderer:
        _renderer.append(GreyRenderer(camera))
    return _renderer[0]


def render_grey(vertices_mm: np.ndarray, faces: np.ndarray, camera: Camera, light_dirs: np.ndarray) -> np.ndarray:
    """Untextured grey renders, uint8 (L, H, W, 3), one per directional light, black background."""
    return renderer_for(camera).render(vertices_mm, faces, light_dirs)
