-- One row per Metrotec route log trip (engine on to engine off), in UTC.
{{ daily_table('day') }}

with source as (
    {{ lake_source('metrotec', 'routelog', {
        '"ID"': 'bigint',
        '"objectID"': 'varchar',
        '"startTime"': 'timestamptz',
        '"previousStopTime"': 'timestamptz',
        '"stopTime"': 'timestamptz',
        '"stopEnd"': 'timestamptz',
        '"routeLengthKM"': 'double',
        '"drivingTimeSeconds"': 'bigint',
        '"pauseTimeSeconds"': 'bigint',
        '"averageSpeed"': 'double',
        '"maxSpeed"': 'double',
        '"AddressAtStartingPoint"': 'varchar',
        '"AddressAtEndPoint"': 'varchar',
        'status': 'varchar',
        'extracted_at': 'timestamptz',
        'day': 'date',
    }) }}
),

renamed as (
    select
        "objectID" || '|' || cast("ID" as varchar) as source_trip_id,
        cast("ID" as varchar) as route_id,
        "objectID" as source_vehicle_id,
        cast("startTime" as timestamptz) as started_at,
        cast("stopTime" as timestamptz) as ended_at,
        cast("previousStopTime" as timestamptz) as previous_ended_at,
        cast("stopEnd" as timestamptz) as parked_until,
        epoch(cast("stopTime" as timestamptz)) - epoch(cast("startTime" as timestamptz))
            as duration_s,
        cast("drivingTimeSeconds" as double) as driving_s,
        cast("pauseTimeSeconds" as double) as pause_s,
        "routeLengthKM" as distance_km,
        "averageSpeed" as avg_speed_kmh,
        "maxSpeed" as max_speed_kmh,
        "AddressAtStartingPoint" as start_address,
        "AddressAtEndPoint" as end_address,
        status,
        extracted_at,
        cast(day as date) as day
    from source
),

-- A trip is landed in the partition of its start day; the window guards against a copy left
-- by an earlier landing under another layout.
final as (
    {{ latest_landing('renamed', 'source_trip_id', 'extracted_at desc') }}
)

select * from final
