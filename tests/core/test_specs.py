import json
import subprocess
import sys

import pytest
from toy_components import TOY_SPEC

from stillroom.roles import UserError
from stillroom.specs import SpecError, load_spec, spec_model, validate_spec


def problems(toy_host, tmp_path, text, suffix=".toml"):
    path = tmp_path / f"spec{suffix}"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        load_spec(path, toy_host)
    return getattr(info.value, "lines", [str(info.value)])


def test_valid_toml_and_yaml_agree(toy_host, tmp_path, toy_spec):
    import tomllib

    import yaml

    data = tomllib.loads(TOY_SPEC)
    yaml_path = tmp_path / "toy.yaml"
    yaml_path.write_text(yaml.safe_dump(data))
    assert load_spec(toy_spec, toy_host).model_dump() == load_spec(yaml_path, toy_host).model_dump()


def test_unknown_kind_suggests_close_name(toy_host, tmp_path):
    lines = problems(toy_host, tmp_path, TOY_SPEC.replace('kind = "gold"', 'kind = "gld"'))
    assert lines == ["methods[1].kind: unknown method kind 'gld' (did you mean 'gold'?); known: coin, copy, gold"]


def test_unknown_field_names_location_and_suggests(toy_host, tmp_path):
    lines = problems(toy_host, tmp_path, TOY_SPEC.replace('kind = "words"', 'kind = "words"\ntrain_sise = 3'))
    assert lines == ["data.train_sise: unknown field 'train_sise' (did you mean 'train_size'?)"]


def test_wrong_type_and_missing_section(toy_host, tmp_path):
    text = TOY_SPEC.replace('kind = "words"', 'kind = "words"\ntest_size = "many"').replace('[student]\nkind = "table"\n', "")
    lines = problems(toy_host, tmp_path, text)
    assert "student: required field is missing" in lines
    assert any(line.startswith("data.test_size: Input should be a valid integer") for line in lines)
    assert len(lines) == 2


def test_endpoint_reference_is_checked(toy_host, tmp_path):
    lines = problems(toy_host, tmp_path, TOY_SPEC.replace('endpoint = "up"', 'endpoint = "upp"'))
    assert lines == ["teacher.endpoint: no endpoint named 'upp' (did you mean 'up'?); defined: up"]


def test_duplicate_method_entries_need_labels(toy_host, tmp_path):
    text = TOY_SPEC + '\n[[methods]]\nkind = "gold"\n'
    assert any("distinct labels" in line for line in problems(toy_host, tmp_path, text))
    ok = TOY_SPEC + '\n[[methods]]\nkind = "gold"\nlabel = "gold-again"\n'
    path = tmp_path / "ok.toml"
    path.write_text(ok)
    assert [m.label for m in load_spec(path, toy_host).methods] == [None, None, "gold-again"]


def test_malformed_files_name_the_place(toy_host, tmp_path):
    toml_lines = problems(toy_host, tmp_path, 'name = "x"\n[student\n')
    assert toml_lines[0].startswith(str(tmp_path / "spec.toml")) and "invalid TOML" in toml_lines[0]
    yaml_lines = problems(toy_host, tmp_path, "name: x\nstudent: [unclosed\n", ".yaml")
    assert yaml_lines[0].startswith(f"{tmp_path / 'spec.yaml'}:") and "invalid YAML" in yaml_lines[0]
    assert "no such spec file" in str(pytest.raises(UserError, load_spec, tmp_path / "missing.toml", toy_host).value)


def test_schema_includes_every_component_config(toy_host):
    schema = spec_model(toy_host).model_json_schema()
    text = json.dumps(schema)
    for kind in ("echo", "table", "words", "copy", "gold", "match"):
        assert f'"const": "{kind}"' in text
    assert schema["properties"]["methods"]["items"]["discriminator"]["propertyName"] == "kind"


def test_component_ref_validates_against_registry(toy_host):
    from pydantic import Field

    from stillroom import ComponentConfig, ComponentRef

    class Options(ComponentConfig):
        teacher_endpoint: ComponentRef("endpoint") = Field(description="an endpoint")

    assert Options(teacher_endpoint="echo").teacher_endpoint == {"kind": "echo"}
    with pytest.raises(Exception, match="did you mean 'echo'"):
        Options(teacher_endpoint={"kind": "ecko"})
    with pytest.raises(Exception, match="unknown field 'sufix'"):
        Options(teacher_endpoint={"kind": "echo", "sufix": "!"})


def test_build_validates_config(toy_host):
    import stillroom

    student = stillroom.build("student", "table", capacity=3)
    assert student.config.capacity == 3
    with pytest.raises(SpecError, match=r"student\[table\]\.capacity: Input should be a valid integer"):
        stillroom.build("student", "table", capacity="lots")
    with pytest.raises(UserError, match="did you mean 'table'"):
        stillroom.build("student", "tabel")


def test_cli_validate_exit_codes_without_traceback(tmp_path, stillroom_env):
    good = tmp_path / "good.toml"
    good.write_text('name = "x"\n[student]\nkind = "nope"\n[data]\nkind = "file"\npath = "a.jsonl"\n[[methods]]\nkind = "x"\n')
    out = subprocess.run([sys.executable, "-m", "stillroom.cli", "spec", "validate", str(good)],
                         capture_output=True, text=True)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.splitlines()[0].startswith("student.kind: unknown student kind 'nope'")
    assert any(line.startswith("methods[0].kind: unknown method kind 'x'") for line in out.stderr.splitlines())
